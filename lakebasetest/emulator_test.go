package lakebasetest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/databricks/databricks-sdk-go"
	"github.com/databricks/databricks-sdk-go/apierr"
	"github.com/databricks/databricks-sdk-go/service/database"
	"github.com/databricks/databricks-sdk-go/service/iam"
	"github.com/databricks/databricks-sdk-go/service/postgres"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/goleak"

	"github.com/lakebase-go/lakebase/internal/leaktest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, leaktest.Options()...) }

func login(ctx context.Context, e *Emulator, user, password, sslmode string) error {
	cfg, err := pgx.ParseConfig(fmt.Sprintf("host=%s port=%d dbname=%s sslmode=%s sslrootcert='%s'", e.Host(), e.Port(), e.Database(), sslmode, e.CAFile()))
	if err != nil {
		return err
	}
	cfg.User, cfg.Password = user, password
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return err
	}
	var who string
	err = conn.QueryRow(ctx, "SELECT current_user").Scan(&who)
	_ = conn.Close(ctx)
	if err == nil && who != user {
		err = fmt.Errorf("logged in as %q, want %q", who, user)
	}
	return err
}

func wantAuthFailure(t *testing.T, what string, err error) {
	t.Helper()
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || (pgErr.Code != "28P01" && pgErr.Code != "28000") {
		t.Errorf("%s: want SQLSTATE 28P01/28000, got %v", what, err)
	}
}

func TestTokenLogins(t *testing.T) {
	start := time.Now()
	e := Start(t)
	t.Logf("emulator started in %v", time.Since(start))
	ctx := t.Context()
	sp := e.ServicePrincipal()
	tok1 := e.MintToken(sp, time.Hour)
	tok2 := e.MintToken(sp, time.Hour)
	if len(tok1) != DefaultTokenSize || strings.Count(tok1, ".") != 2 {
		t.Errorf("token is %d bytes with %d dots, want a %d-byte JWT", len(tok1), strings.Count(tok1, "."), DefaultTokenSize)
	}
	if err := login(ctx, e, sp, tok1, "verify-full"); err != nil {
		t.Fatalf("minted token: %v", err)
	}
	if err := login(ctx, e, sp, tok2, "verify-full"); err != nil {
		t.Errorf("second token of the same role: %v", err)
	}
	wantAuthFailure(t, "wrong token", login(ctx, e, sp, "lbt_not-a-token", "verify-full"))
	expired := e.MintToken(sp, -time.Second)
	wantAuthFailure(t, "expired token", login(ctx, e, sp, expired, "verify-full"))
	if _, err := e.AddUser(ctx, "alice@example.com"); err != nil {
		t.Fatal(err)
	}
	wantAuthFailure(t, "other role's token", login(ctx, e, "alice@example.com", tok1, "verify-full"))
	e.RevokeRole(sp)
	wantAuthFailure(t, "revoked token", login(ctx, e, sp, tok1, "verify-full"))
	if err := login(ctx, e, sp, e.MintToken(sp, time.Hour), "verify-full"); err != nil {
		t.Errorf("token minted after revocation: %v", err)
	}
	if err := login(ctx, e, sp, e.MintToken(sp, time.Hour), "disable"); err == nil {
		t.Error("plaintext login accepted by the default hostssl-only server")
	}
	if e.Logins(sp) < 3 || e.Rejects(sp) < 3 {
		t.Errorf("logins %d, rejects %d", e.Logins(sp), e.Rejects(sp))
	}
}

func TestPlaintextOption(t *testing.T) {
	e := Start(t, WithPlaintext())
	if err := login(t.Context(), e, e.ServicePrincipal(), e.MintToken(e.ServicePrincipal(), time.Hour), "disable"); err != nil {
		t.Errorf("plaintext with WithPlaintext: %v", err)
	}
}

func TestWorkspaceAPIThroughSDK(t *testing.T) {
	e := Start(t, WithMinTTL(time.Second))
	t.Setenv("DATABRICKS_CLIENT_ID", "leak-id")
	t.Setenv("DATABRICKS_CLIENT_SECRET", "leak-secret")
	w, err := e.fullClient(spBearer(e))
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	me, err := w.CurrentUser.Me(ctx, iam.MeRequest{})
	if err != nil || me.UserName != e.ServicePrincipal() {
		t.Fatalf("Me: %v %v", me, err)
	}
	ep, err := w.Postgres.GetEndpoint(ctx, postgres.GetEndpointRequest{Name: e.Endpoint()})
	if err != nil || ep.Status.Hosts.Host != e.Host() {
		t.Fatalf("GetEndpoint: %v", err)
	}
	cred, err := w.Postgres.GenerateDatabaseCredential(ctx, postgres.GenerateDatabaseCredentialRequest{Endpoint: e.Endpoint()})
	if err != nil {
		t.Fatal(err)
	}
	if err := login(ctx, e, e.ServicePrincipal(), cred.Token, "verify-full"); err != nil {
		t.Errorf("login with an API credential: %v", err)
	}
	if d := time.Until(cred.ExpireTime.AsTime()); d < 59*time.Minute || d > time.Hour {
		t.Errorf("default TTL gives expiry in %v", d)
	}
	inst, err := w.Database.GetDatabaseInstance(ctx, database.GetDatabaseInstanceRequest{Name: e.Instance()})
	if err != nil || inst.ReadWriteDns != e.Host() {
		t.Fatalf("GetDatabaseInstance: %v", err)
	}
	icred, err := w.Database.GenerateDatabaseCredential(ctx, database.GenerateDatabaseCredentialRequest{InstanceNames: []string{e.Instance()}})
	if err != nil || icred.ExpirationTime == "" {
		t.Fatalf("instance credential: %v", err)
	}
	var ae *apierr.APIError
	_, err = w.Postgres.GetEndpoint(ctx, postgres.GetEndpointRequest{Name: "projects/x/branches/y/endpoints/z"})
	if !errors.As(err, &ae) || ae.StatusCode != 404 || ae.ErrorCode != "RESOURCE_DOES_NOT_EXIST" {
		t.Errorf("unknown endpoint: %v", err)
	}
	bad, _ := e.fullClient("dapi-unknown")
	_, err = bad.CurrentUser.Me(ctx, iam.MeRequest{})
	if !errors.As(err, &ae) || ae.StatusCode != 401 {
		t.Errorf("unknown bearer: %v", err)
	}
	e.FailNext(RouteCredentials, 1, 403, "PERMISSION_DENIED")
	_, err = w.Postgres.GenerateDatabaseCredential(ctx, postgres.GenerateDatabaseCredentialRequest{Endpoint: e.Endpoint()})
	if !errors.As(err, &ae) || ae.StatusCode != 403 || ae.ErrorCode != "PERMISSION_DENIED" {
		t.Errorf("FailNext 403: %v", err)
	}
	for f, check := range map[Fault]func(*postgres.DatabaseCredential, error) bool{
		FaultMalformedJSON: func(_ *postgres.DatabaseCredential, err error) bool { return err != nil },
		FaultEmptyToken:    func(c *postgres.DatabaseCredential, err error) bool { return err == nil && c.Token == "" },
		FaultExpiredToken: func(c *postgres.DatabaseCredential, err error) bool {
			return err == nil && c.ExpireTime.AsTime().Before(time.Now())
		},
		FaultMissingExpiry: func(c *postgres.DatabaseCredential, err error) bool { return err == nil && c.ExpireTime == nil },
	} {
		e.SetFault(RouteCredentials, f)
		c, err := w.Postgres.GenerateDatabaseCredential(ctx, postgres.GenerateDatabaseCredentialRequest{Endpoint: e.Endpoint()})
		if !check(c, err) {
			t.Errorf("fault %d: got %+v, %v", f, c, err)
		}
	}
	e.SetFault(RouteCredentials, FaultNone)
	e.SetLatency(RouteMe, 200*time.Millisecond)
	tctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if _, err := w.CurrentUser.Me(tctx, iam.MeRequest{}); err == nil {
		t.Error("latency knob: a 200 ms call finished within 50 ms")
	}
	if e.Calls(RouteCredentials) < 6 || e.Calls(RouteMe) < 2 {
		t.Errorf("counters: credentials %d, me %d", e.Calls(RouteCredentials), e.Calls(RouteMe))
	}
}

func TestRestartAndCloseLeaveNothing(t *testing.T) {
	e, err := New(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	if err := e.AdminExec(ctx, "CREATE TABLE kept (x int); INSERT INTO kept VALUES (1)"); err != nil {
		t.Fatal(err)
	}
	if err := e.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if err := e.AdminExec(ctx, "SELECT x FROM kept"); err != nil {
		t.Errorf("data lost across restart: %v", err)
	}
	dir, port := e.Dir(), e.Port()
	pid, _ := os.ReadFile(dir + "/data/postmaster.pid")
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("temp dir %s still exists", dir)
	}
	if len(pid) == 0 {
		t.Fatal("no postmaster.pid was found while running")
	}
	var p int
	fmt.Sscanf(string(pid), "%d", &p)
	if stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p)); err == nil && !strings.Contains(string(stat), ") Z ") {
		t.Errorf("postmaster %d still running: %s", p, stat)
	}
	if err := login(ctx, e, "x", "y", "disable"); err == nil {
		t.Errorf("port %d still answers", port)
	}
}

func TestParallelEmulators(t *testing.T) {
	var wg sync.WaitGroup
	errs := make(chan error, 5)
	for i := 0; i < 5; i++ {
		wg.Go(func() {
			e, err := New(t.Context())
			if err != nil {
				errs <- err
				return
			}
			defer e.Close()
			errs <- login(t.Context(), e, e.ServicePrincipal(), e.MintToken(e.ServicePrincipal(), time.Hour), "verify-full")
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
}

func TestDropConnectionFault(t *testing.T) {
	e := Start(t)
	w, err := e.fullClient(spBearer(e))
	if err != nil {
		t.Fatal(err)
	}
	e.SetFault(RouteMe, FaultDropConnection)
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
	defer cancel()
	if _, err := w.CurrentUser.Me(ctx, iam.MeRequest{}); err == nil {
		t.Fatal("Me succeeded while the API drops connections")
	}
	e.SetFault(RouteMe, FaultNone)
	if _, err := w.CurrentUser.Me(t.Context(), iam.MeRequest{}); err != nil {
		t.Fatalf("after clearing the fault: %v", err)
	}
}

// fullClient is a full SDK workspace client for the fake API with bearer.
func (e *Emulator) fullClient(bearer string) (*databricks.WorkspaceClient, error) {
	return databricks.NewWorkspaceClient((*databricks.Config)(e.WorkspaceConfigFor(bearer)))
}
