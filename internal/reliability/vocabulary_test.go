package reliability

import (
	"context"
	"database/sql"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/lakebase-go/lakebase/connector"
	"github.com/lakebase-go/lakebase/driver"
	"github.com/lakebase-go/lakebase/lakebasetest"
	"github.com/lakebase-go/lakebase/peruser"
	"github.com/lakebase-go/lakebase/tokensource"
)

// TestErrorVocabulary walks the failures of every entry point through the
// one errors.As / errors.Is per category that README's Errors table
// documents: configuration (*connector.ConfigError, naming the setting),
// refused login (*connector.LoginError), credential failure
// (*tokensource.Error + IsTransient) and closed (tokensource.ErrClosed).
func TestErrorVocabulary(t *testing.T) {
	e := lakebasetest.Start(t)
	quiet := slog.New(slog.DiscardHandler)
	noEnv := func(string) (string, bool) { return "", false }
	w := e.WorkspaceConfig()
	base := connector.Config{Endpoint: e.Endpoint(), Host: e.Host(), Port: e.Port(), Database: e.Database(),
		User: e.ServicePrincipal(), SSLRootCert: e.CAFile(), WorkspaceConfig: w, Logger: quiet, LookupEnv: noEnv}

	isConfig := func(t *testing.T, where string, err error) {
		t.Helper()
		var ce *connector.ConfigError
		if !errors.As(err, &ce) || ce.Setting == "" {
			t.Errorf("%s: want a *connector.ConfigError naming a setting, got %T %v", where, err, err)
		}
	}

	// Configuration mistakes.
	bad := base
	bad.SSLMode = "allow"
	_, cerr := connector.New(t.Context(), bad)
	isConfig(t, "connector.New", cerr)
	_, err := sql.Open(driver.Name, "port=abc")
	isConfig(t, "sql.Open bad key value", err)
	var de *driver.DSNError
	if !errors.As(err, &de) || de.Key != "port" {
		t.Errorf("sql.Open: want a *driver.DSNError for key port too, got %v", err)
	}
	_, err = sql.Open(driver.Name, "sslmode=allow lakebase_endpoint="+e.Endpoint())
	isConfig(t, "sql.Open bad sslmode", err)
	if !errors.As(err, &de) || de.Key != "sslmode" {
		t.Errorf("sql.Open bad sslmode: want a *driver.DSNError for key sslmode too, got %v", err)
	}
	pbad := base
	pbad.Endpoint = "not-an-endpoint"
	_, err = peruser.New(t.Context(), peruser.Config{Base: pbad})
	isConfig(t, "peruser.New", err)

	// A refused login.
	ghost := e.AddIdentityWithoutRole("ghost@example.com")
	gw := e.WorkspaceConfigFor(ghost)
	gcfg := base
	gcfg.WorkspaceConfig, gcfg.User = gw, "ghost@example.com"
	gc, err := connector.New(t.Context(), gcfg)
	if err != nil {
		t.Fatal(err)
	}
	gdb := connector.OpenDB(gc)
	var le *connector.LoginError
	gerr := gdb.PingContext(t.Context())
	if !errors.As(gerr, &le) || le.Reason != connector.LoginRoleMissing {
		t.Errorf("first use: want a *connector.LoginError (role missing), got %v", gerr)
	}
	gdb.Close()

	// A wake longer than ConnectTimeout: a *connector.WakeError, the one
	// failure of a connection that IsTransient calls transient besides
	// fetch failures; a refused login and a configuration error are not.
	wcfg := base
	wcfg.Port, wcfg.ConnectTimeout = e.FrontDoorPort(), time.Second
	wc, err := connector.New(t.Context(), wcfg)
	if err != nil {
		t.Fatal(err)
	}
	e.SetWakeDelay(time.Minute)
	e.Suspend()
	_, err = wc.Connect(t.Context())
	e.Resume()
	wc.Close()
	var we *connector.WakeError
	if !errors.As(err, &we) || !tokensource.IsTransient(err) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Connect during a long wake: want a transient *connector.WakeError wrapping DeadlineExceeded, got %v", err)
	}
	for what, err := range map[string]error{"refused login": gerr, "configuration": cerr} {
		if tokensource.IsTransient(err) {
			t.Errorf("%s: IsTransient = true, README says retry does not help: %v", what, err)
		}
	}

	// Credential failures: transient or not.
	for _, tc := range []struct {
		status    int
		code      string
		transient bool
	}{{503, "TEMPORARILY_UNAVAILABLE", true}, {403, "PERMISSION_DENIED", false}} {
		e.FailNext(lakebasetest.RouteCredentials, 1000, tc.status, tc.code)
		cfg := base
		cfg.Token = tokensource.Options{Mode: tokensource.Lazy, RetrySchedule: []time.Duration{}}
		c, err := connector.New(t.Context(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		db := connector.OpenDB(c)
		err = db.PingContext(t.Context())
		var te *tokensource.Error
		if !errors.As(err, &te) || te.Transient() != tc.transient || tokensource.IsTransient(err) != tc.transient {
			t.Errorf("HTTP %d: want a *tokensource.Error with Transient()=%v, got %v", tc.status, tc.transient, err)
		}
		db.Close()
		e.FailNext(lakebasetest.RouteCredentials, 0, 0, "")
	}

	// Closed, on every path.
	c, err := connector.New(t.Context(), base)
	if err != nil {
		t.Fatal(err)
	}
	pc, err := c.PoolConfig()
	if err != nil {
		t.Fatal(err)
	}
	db := connector.OpenDB(c)
	db.Close()
	if _, err := c.Connect(t.Context()); !errors.Is(err, tokensource.ErrClosed) {
		t.Errorf("Connect after Close: %v", err)
	}
	if err := pc.BeforeConnect(t.Context(), pc.ConnConfig.Copy()); !errors.Is(err, tokensource.ErrClosed) {
		t.Errorf("PoolConfig's BeforeConnect after Close: %v", err)
	}
	ts := tokensource.New(func(context.Context) (tokensource.Token, error) {
		return tokensource.Token{Value: "x", Expiry: time.Now().Add(time.Hour)}, nil
	}, tokensource.Options{Mode: tokensource.Lazy})
	ts.Close()
	if _, err := ts.Token(t.Context()); !errors.Is(err, tokensource.ErrClosed) {
		t.Errorf("tokensource after Close: %v", err)
	}
	m, err := peruser.New(t.Context(), peruser.Config{Base: base})
	if err != nil {
		t.Fatal(err)
	}
	bearer, err := e.AddUser(t.Context(), "ada@example.com")
	if err != nil {
		t.Fatal(err)
	}
	// A spoofed identity is an *peruser.AuthError with 403.
	spoof := httptest.NewRequest(http.MethodGet, "/", nil)
	spoof.Header.Set(peruser.HeaderEmail, "ada@example.com")
	spoof.Header.Set(peruser.HeaderAccessToken, "junk-token")
	_, _, err = m.ForRequest(spoof)
	var ae *peruser.AuthError
	if !errors.As(err, &ae) || peruser.StatusCode(err) != http.StatusForbidden {
		t.Errorf("spoofed identity: want a 403 *peruser.AuthError, got %v (%d)", err, peruser.StatusCode(err))
	}
	m.Close()
	if _, _, err := m.Acquire(t.Context(), peruser.Identity{Email: "ada@example.com", AccessToken: bearer}); !errors.Is(err, tokensource.ErrClosed) {
		t.Errorf("peruser after Close: %v", err)
	}
	db2, err := sql.Open(driver.Name, "host=localhost user=u password=p sslmode=disable")
	if err != nil {
		t.Fatal(err)
	}
	db2.Close()
	if err := db2.PingContext(t.Context()); err == nil {
		t.Error("driver DB after Close: ping succeeded")
	}
}
