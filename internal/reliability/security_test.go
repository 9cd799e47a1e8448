package reliability

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/lakebase-go/lakebase/connector"
	_ "github.com/lakebase-go/lakebase/driver"
	"github.com/lakebase-go/lakebase/lakebasetest"
	"github.com/lakebase-go/lakebase/tokensource"
)

const secret = "lbt_SECRET_MARKER_7f3a9c"

// Every failure path that handles a token reports and logs without it.
func TestNoSecretInLogsErrorsOrSpans(t *testing.T) {
	e := lakebasetest.Start(t)
	cp := newCapture(t)
	var errs []error

	// 1. The token source hands out a token the server refuses: LoginError,
	//    forced refresh, retry, warning log, fetch spans.
	fetches := 0
	fetch := func(context.Context) (tokensource.Token, error) {
		fetches++
		return tokensource.Token{Value: fmt.Sprintf("%s_%d", secret, fetches), Expiry: time.Now().Add(time.Hour)}, nil
	}
	ts := tokensource.New(fetch, tokensource.Options{Mode: tokensource.Lazy, Logger: cp.logger(), TracerProvider: cp.tp})
	defer ts.Close()
	cfg := config(t, e, cp.logger())
	cfg.Endpoint, cfg.TokenSource = "", ts
	cfg.Telemetry, cfg.TracerProvider = true, cp.tp
	c, db := open(t, cfg)
	errs = append(errs, db.PingContext(t.Context()))
	var le *connector.LoginError
	if !errors.As(errs[0], &le) {
		t.Errorf("refused token: want *LoginError, got %v", errs[0])
	}
	_ = c

	// 2. Fetch failures of every kind through the real fetcher.
	cfg2 := config(t, e, cp.logger())
	cfg2.Token.Mode, cfg2.TracerProvider = tokensource.Lazy, cp.tp
	c2, _ := open(t, cfg2)
	for _, f := range []lakebasetest.Fault{lakebasetest.FaultMalformedJSON, lakebasetest.FaultTruncatedBody, lakebasetest.FaultEmptyToken, lakebasetest.FaultExpiredToken, lakebasetest.FaultMissingExpiry} {
		e.SetFault(lakebasetest.RouteCredentials, f)
		_, err := c2.Connect(t.Context())
		errs = append(errs, err)
	}
	e.SetFault(lakebasetest.RouteCredentials, lakebasetest.FaultNone)
	e.FailNext(lakebasetest.RouteCredentials, 3, 503, "TEMPORARILY_UNAVAILABLE")
	_, err := c2.Connect(t.Context())
	errs = append(errs, err)
	e.FailNext(lakebasetest.RouteCredentials, 0, 0, "")

	// 3. A wrong static password, and a DSN holding it.
	cfg3 := config(t, e, cp.logger())
	cfg3.Endpoint, cfg3.Password = "", secret
	_, db3 := open(t, cfg3)
	errs = append(errs, db3.PingContext(t.Context()))
	dsnDB, err := sql.Open("lakebase", fmt.Sprintf("host=%s port=%d user=nobody password=%s sslrootcert='%s' lakebase_endpiont=x", e.Host(), e.Port(), secret, e.CAFile()))
	errs = append(errs, err)
	if dsnDB != nil {
		_ = dsnDB.Close()
	}

	all := cp.text()
	for i, err := range errs {
		if err == nil {
			continue
		}
		all += fmt.Sprintf("\nerror %d: %v\n%+v\n%#v", i, err, err, err)
	}
	for _, marker := range []string{"lbt_", "eyJ"} { // emulator tokens: JWT-shaped, signature starts with lbt_
		if i := strings.Index(all, marker); i >= 0 {
			t.Fatalf("an emulator token leaked: ...%s...", all[max(0, i-200):min(len(all), i+50)])
		}
	}
	if strings.Contains(all, "SECRET_MARKER") {
		i := strings.Index(all, "SECRET_MARKER")
		t.Fatalf("the secret leaked: ...%s...", all[max(0, i-200):min(len(all), i+50)])
	}
	if len(cp.spans.Ended()) == 0 {
		t.Error("no spans recorded: the span check proves nothing")
	}
	if !strings.Contains(all, "error") {
		t.Error("no errors captured: the check proves nothing")
	}
}

// A token minted for one role cannot log in as another.
func TestTokenBoundToRole(t *testing.T) {
	e := lakebasetest.Start(t)
	ctx := t.Context()
	if _, err := e.AddUser(ctx, "alice@example.com"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.AddUser(ctx, "bob@example.com"); err != nil {
		t.Fatal(err)
	}
	aliceTok := e.MintToken("alice@example.com", time.Hour)
	login := func(user, pw string) error {
		cfg, err := pgx.ParseConfig(fmt.Sprintf("host=%s port=%d dbname=%s sslmode=verify-full sslrootcert='%s'", e.Host(), e.Port(), e.Database(), e.CAFile()))
		if err != nil {
			return err
		}
		cfg.User, cfg.Password = user, pw
		conn, err := pgx.ConnectConfig(ctx, cfg)
		if err == nil {
			_ = conn.Close(ctx)
		}
		return err
	}
	if err := login("alice@example.com", aliceTok); err != nil {
		t.Fatalf("alice with her token: %v", err)
	}
	err := login("bob@example.com", aliceTok)
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || (pgErr.Code != "28P01" && pgErr.Code != "28000") {
		t.Fatalf("bob with alice's token: want 28P01/28000, got %v", err)
	}
}

// verify-full refuses an expired server certificate.
func TestExpiredServerCertificateRefused(t *testing.T) {
	e := lakebasetest.Start(t, lakebasetest.WithExpiredServerCert())
	_, db := open(t, config(t, e, nil))
	err := db.PingContext(t.Context())
	if err == nil || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("want a certificate-expired error, got %v", err)
	}
}

// verify-full refuses a certificate issued for another host name, and
// require (upgraded) does too.
func TestWrongHostnameRefused(t *testing.T) {
	e := lakebasetest.Start(t, lakebasetest.WithServerCertHosts("db.example.test"))
	for _, mode := range []string{"verify-full", "require", "verify-ca"} {
		cfg := config(t, e, nil)
		cfg.SSLMode = mode
		_, db := open(t, cfg)
		err := db.PingContext(t.Context())
		if err == nil || !strings.Contains(err.Error(), "certificate") || !strings.Contains(err.Error(), "localhost") {
			t.Errorf("sslmode=%s with a certificate for another host: want a hostname error, got %v", mode, err)
		}
	}
}
