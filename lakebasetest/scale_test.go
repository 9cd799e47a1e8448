package lakebasetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/databricks/databricks-sdk-go"
	"github.com/databricks/databricks-sdk-go/config"
	"github.com/databricks/databricks-sdk-go/service/iam"
	"github.com/databricks/databricks-sdk-go/service/postgres"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// connectAt opens a connection to host:port as user.
func connectAt(ctx context.Context, e *Emulator, host string, port int, user, password string) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(fmt.Sprintf("host=%s port=%d dbname=%s sslmode=verify-full sslrootcert='%s' connect_timeout=10", host, port, e.Database(), e.CAFile()))
	if err != nil {
		return nil, err
	}
	cfg.User, cfg.Password = user, password
	return pgx.ConnectConfig(ctx, cfg)
}

// loginAt connects, checks current_user and closes.
func loginAt(ctx context.Context, e *Emulator, host string, port int, user, password string) error {
	conn, err := connectAt(ctx, e, host, port, user, password)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	var who string
	if err := conn.QueryRow(ctx, "SELECT current_user").Scan(&who); err != nil {
		return err
	}
	if who != user {
		return fmt.Errorf("logged in as %q, want %q", who, user)
	}
	return nil
}

// syncBuffer collects the SDK's log output (it logs through package log).
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func captureStdLog(t *testing.T) *syncBuffer {
	buf := &syncBuffer{}
	prev := log.Writer()
	log.SetOutput(buf)
	t.Cleanup(func() { log.SetOutput(prev) })
	return buf
}

// setAppEnv puts AppEnv into the process environment, with nothing else
// the SDK could pick up (no PAT, no profile file).
func setAppEnv(t *testing.T, e *Emulator) {
	t.Setenv("HOME", t.TempDir())
	for _, k := range []string{"DATABRICKS_TOKEN", "DATABRICKS_CONFIG_PROFILE", "DATABRICKS_CONFIG_FILE", "DATABRICKS_AUTH_TYPE", "PGPASSWORD", "PGSERVICE", "PGSSLCERT", "PGSSLKEY"} {
		t.Setenv(k, "")
	}
	for k, v := range e.AppEnv() {
		t.Setenv(k, v)
	}
}

func TestAppEnvShape(t *testing.T) {
	e := Start(t)
	env := e.AppEnv()
	want := []string{"DATABRICKS_HOST", "DATABRICKS_CLIENT_ID", "DATABRICKS_CLIENT_SECRET", "PGHOST", "PGPORT", "PGDATABASE", "PGUSER", "PGSSLMODE", "PGAPPNAME", "PGSSLROOTCERT", "LAKEBASE_ENDPOINT"}
	if len(env) != len(want) {
		t.Errorf("AppEnv has %d variables, want %d: %v", len(env), len(want), env)
	}
	for _, k := range want {
		if env[k] == "" {
			t.Errorf("AppEnv lacks %s", k)
		}
	}
	if env["PGUSER"] != env["DATABRICKS_CLIENT_ID"] || env["PGUSER"] != e.ServicePrincipal() {
		t.Errorf("PGUSER %q, client id %q", env["PGUSER"], env["DATABRICKS_CLIENT_ID"])
	}
	if env["PGPORT"] != fmt.Sprint(e.FrontDoorPort()) || e.FrontDoorPort() == e.Port() {
		t.Errorf("PGPORT %s, front door %d, direct %d", env["PGPORT"], e.FrontDoorPort(), e.Port())
	}
	if _, ok := env["DATABRICKS_TOKEN"]; ok {
		t.Error("AppEnv carries a PAT")
	}
}

// TestAppsM2MLogin runs the Databricks Apps login path from the
// environment only: the SDK's default auth discovers the OIDC endpoints,
// gets a token with the client-credentials grant, is the service
// principal for Me, mints a credential, and pgx logs in from PG* alone.
func TestAppsM2MLogin(t *testing.T) {
	e := Start(t)
	setAppEnv(t, e)
	logs := captureStdLog(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()

	w, err := databricks.NewWorkspaceClient()
	if err != nil {
		t.Fatal(err)
	}
	if w.Config.AuthType != "oauth-m2m" {
		t.Errorf("auth type %q, want oauth-m2m", w.Config.AuthType)
	}
	me, err := w.CurrentUser.Me(ctx, iam.MeRequest{})
	if err != nil || me.UserName != e.ServicePrincipal() {
		t.Fatalf("Me: %+v %v", me, err)
	}
	cred, err := w.Postgres.GenerateDatabaseCredential(ctx, postgres.GenerateDatabaseCredentialRequest{Endpoint: e.AppEnv()["LAKEBASE_ENDPOINT"]})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := pgx.ParseConfig("") // PGHOST, PGPORT, PGUSER, ... from the environment
	if err != nil {
		t.Fatal(err)
	}
	cfg.Password = cred.Token
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatalf("login from PG* env: %v", err)
	}
	var who, app string
	err = conn.QueryRow(ctx, "SELECT current_user, current_setting('application_name')").Scan(&who, &app)
	conn.Close(ctx)
	if err != nil || who != e.ServicePrincipal() || app != AppName {
		t.Errorf("connected as %q app %q: %v", who, app, err)
	}
	if e.Calls(RouteOAuthToken) != 1 || e.Calls(RouteOIDCDiscovery) < 1 || e.Calls(RouteHostMetadata) < 1 {
		t.Errorf("calls: token %d, discovery %d, metadata %d", e.Calls(RouteOAuthToken), e.Calls(RouteOIDCDiscovery), e.Calls(RouteHostMetadata))
	}
	if s := logs.String(); strings.Contains(s, "[WARN]") {
		t.Errorf("the SDK warned:\n%s", s)
	}
}

// TestAppsM2MWrongSecret: the token endpoint answers a wrong secret with
// 401 {"error":"invalid_client",...}. Under default auth the SDK then moves
// on through its credential chain and reports ErrCannotConfigureDefault;
// with DATABRICKS_AUTH_TYPE=oauth-m2m it reports the endpoint's body (the
// status is not kept in the error chain). Either way Me
// never reaches the API and nothing is retried for long.
func TestAppsM2MWrongSecret(t *testing.T) {
	e := Start(t)
	setAppEnv(t, e)
	t.Setenv("DATABRICKS_CLIENT_SECRET", "dose-wrong-secret")
	for _, authType := range []string{"", "oauth-m2m"} {
		t.Setenv("DATABRICKS_AUTH_TYPE", authType)
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		start, calls := time.Now(), e.Calls(RouteOAuthToken)
		w, err := databricks.NewWorkspaceClient()
		if err == nil {
			_, err = w.CurrentUser.Me(ctx, iam.MeRequest{})
		}
		cancel()
		switch {
		case err == nil:
			t.Fatalf("auth type %q: a wrong client secret was accepted", authType)
		case authType == "" && !errors.Is(err, config.ErrCannotConfigureDefault):
			t.Errorf("default auth: want ErrCannotConfigureDefault, got %v", err)
		case authType != "" && !strings.Contains(err.Error(), `{"error":"invalid_client","error_description":"Client authentication failed"}`):
			// The SDK keeps the token endpoint's body, not its status.
			t.Errorf("oauth-m2m: want the token endpoint's invalid_client, got %v", err)
		}
		if strings.Contains(err.Error(), "dose-wrong-secret") {
			t.Error("the error shows the secret")
		}
		if d := time.Since(start); d > 10*time.Second {
			t.Errorf("refusal took %v (retried?)", d)
		}
		if n := e.Calls(RouteOAuthToken) - calls; n < 1 || n > 2 {
			t.Errorf("auth type %q: token endpoint called %d times", authType, n)
		}
		t.Logf("auth type %q: %v", authType, err)

	}
	if e.Calls(RouteMe) != 0 {
		t.Errorf("Me reached the API %d times without a token", e.Calls(RouteMe))
	}
}

func TestSuspendAndWake(t *testing.T) {
	e := Start(t)
	ctx := t.Context()
	sp := e.ServicePrincipal()
	tok := e.MintToken(sp, time.Hour)
	h, fd := e.Host(), e.FrontDoorPort()

	open, err := connectAt(ctx, e, h, fd, sp, tok)
	if err != nil {
		t.Fatalf("through the awake front door: %v", err)
	}
	defer open.Close(context.Background())
	wantAuthFailure(t, "bad token through the front door", loginAt(ctx, e, h, fd, sp, "not-a-token"))

	const delay = 400 * time.Millisecond
	e.SetWakeDelay(delay)
	e.Suspend()
	if !e.Suspended() {
		t.Fatal("not suspended")
	}
	if err := open.Ping(ctx); err == nil {
		t.Error("a connection opened before Suspend still works")
	}
	// pgx cleans a broken connection up with a CancelRequest on a new
	// connection, which meets the suspended front door too (and starts a
	// wake-up, as it would on the real service). Let it finish, then
	// suspend afresh.
	_ = open.Close(ctx)
	if err := loginAt(ctx, e, e.Host(), e.Port(), sp, tok); err != nil {
		t.Errorf("the direct port is affected by Suspend: %v", err)
	}
	e.Suspend()
	w0, r0 := e.WakeUps(), e.RefusedWhileWaking()
	first := time.Now()
	err = loginAt(ctx, e, h, fd, sp, tok)
	var pgErr *pgconn.PgError
	if err == nil || errors.As(err, &pgErr) {
		t.Fatalf("first connection while suspended: want a refused connection, got %v", err)
	}
	if e.WakeUps()-w0 != 1 || e.RefusedWhileWaking()-r0 != 1 {
		t.Fatalf("wake-ups +%d, refused +%d, want +1 +1", e.WakeUps()-w0, e.RefusedWhileWaking()-r0)
	}
	// Retry until the wake-up is over, as the docs tell clients to.
	deadline := time.Now().Add(15 * time.Second)
	for {
		err = loginAt(ctx, e, h, fd, sp, tok)
		if err == nil || time.Now().After(deadline) {
			break
		}
		select {
		case <-time.After(20 * time.Millisecond):
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		}
	}
	if err != nil {
		t.Fatalf("after the wake delay: %v", err)
	}
	if waited := time.Since(first); waited < delay {
		t.Errorf("woke after %v, delay is %v", waited, delay)
	}
	if e.WakeUps()-w0 != 1 || e.RefusedWhileWaking()-r0 < 2 || e.Suspended() {
		t.Errorf("after wake: wake-ups +%d, refused +%d, suspended %v", e.WakeUps()-w0, e.RefusedWhileWaking()-r0, e.Suspended())
	}

	// Delay 0: the first connection wakes the compute and goes through.
	e.SetWakeDelay(0)
	refused := e.RefusedWhileWaking()
	e.Suspend()
	if err := loginAt(ctx, e, h, fd, sp, tok); err != nil {
		t.Errorf("zero wake delay: %v", err)
	}
	if e.WakeUps()-w0 != 2 || e.RefusedWhileWaking() != refused {
		t.Errorf("zero delay: wake-ups +%d, refused %d (was %d)", e.WakeUps()-w0, e.RefusedWhileWaking(), refused)
	}

	// Resume wakes at once, without a wake-up.
	e.SetWakeDelay(time.Hour)
	e.Suspend()
	e.Resume()
	if err := loginAt(ctx, e, h, fd, sp, tok); err != nil || e.WakeUps()-w0 != 2 {
		t.Errorf("after Resume: %v, wake-ups +%d", err, e.WakeUps()-w0)
	}
}

func TestWakeStartingUp(t *testing.T) {
	e := Start(t)
	sp := e.ServicePrincipal()
	e.SetWakeMode(WakeStartingUp)
	e.SetWakeDelay(time.Hour)
	e.Suspend()
	err := loginAt(t.Context(), e, e.Host(), e.FrontDoorPort(), sp, e.MintToken(sp, time.Hour))
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "57P03" || pgErr.Message != "the database system is starting up" || pgErr.Severity != "FATAL" {
		t.Fatalf("want FATAL 57P03, got %v", err)
	}
	if e.WakeUps() != 1 || e.RefusedWhileWaking() != 1 {
		t.Errorf("wake-ups %d, refused %d", e.WakeUps(), e.RefusedWhileWaking())
	}
	if e.Logins(sp) != 0 || e.Rejects(sp) != 0 {
		t.Error("the token reached PostgreSQL while waking")
	}
}

func TestAutoSuspend(t *testing.T) {
	e := Start(t)
	ctx := t.Context()
	sp := e.ServicePrincipal()
	conn, err := connectAt(ctx, e, e.Host(), e.FrontDoorPort(), sp, e.MintToken(sp, time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	e.SetWakeDelay(0)
	e.SetAutoSuspend(150 * time.Millisecond)
	deadline := time.Now().Add(10 * time.Second)
	for !e.Suspended() {
		if time.Now().After(deadline) {
			t.Fatal("not suspended after 10 s idle")
		}
		select {
		case <-time.After(10 * time.Millisecond):
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		}
	}
	e.SetAutoSuspend(0)
	if err := conn.Ping(ctx); err == nil {
		t.Error("an idle connection survived the auto-suspend")
	}
	_ = conn.Close(ctx) // its CancelRequest may wake the compute (delay 0)
	if err := loginAt(ctx, e, e.Host(), e.FrontDoorPort(), sp, e.MintToken(sp, time.Hour)); err != nil || e.WakeUps() < 1 {
		t.Errorf("wake after auto-suspend: %v, wake-ups %d", err, e.WakeUps())
	}
}

func TestPoolerHost(t *testing.T) {
	e := Start(t)
	ctx := t.Context()
	sp := e.ServicePrincipal()
	if e.PoolerHost() == e.Host() || e.PoolerHost() == "127.0.0.1" {
		t.Errorf("pooler host %q is the endpoint's host", e.PoolerHost())
	}
	err := loginAt(ctx, e, e.PoolerHost(), e.PoolerPort(), sp, e.MintToken(sp, time.Hour))
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "08P01" || pgErr.Message != "SASL authentication failed" {
		t.Fatalf("token login to the pooler: want PgBouncer's 08P01, got %v", err)
	}
	if e.PoolerRefusals() != 1 || e.Logins(sp)+e.Rejects(sp) != 0 {
		t.Errorf("refusals %d, logins %d, rejects %d", e.PoolerRefusals(), e.Logins(sp), e.Rejects(sp))
	}
	cfg, err := pgx.ParseConfig(e.AdminConnString())
	if err != nil {
		t.Fatal(err)
	}
	cfg.Host, cfg.Port = e.PoolerHost(), uint16(e.PoolerPort())
	cfg.Fallbacks = nil
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatalf("admin (native password) through the pooler: %v", err)
	}
	var who string
	err = conn.QueryRow(ctx, "SELECT current_user").Scan(&who)
	conn.Close(ctx)
	if err != nil || who != adminRole {
		t.Errorf("admin through the pooler: %q %v", who, err)
	}
	cfg.Password = "wrong"
	wantAuthFailure(t, "admin with a wrong password through the pooler", func() error {
		c, err := pgx.ConnectConfig(ctx, cfg)
		if err == nil {
			c.Close(ctx)
		}
		return err
	}())

	w, err := e.fullClient(spBearer(e))
	if err != nil {
		t.Fatal(err)
	}
	ep, err := w.Postgres.GetEndpoint(ctx, postgres.GetEndpointRequest{Name: e.Endpoint()})
	if err != nil {
		t.Fatal(err)
	}
	if ep.Status.Hosts.ReadWritePooledHost != e.PoolerHost() || ep.Status.Hosts.Host != e.Host() || ep.Status.CurrentState != postgres.EndpointStatusStateActive {
		t.Errorf("endpoint status %+v hosts %+v", ep.Status, ep.Status.Hosts)
	}
	e.Suspend()
	if ep, err := w.Postgres.GetEndpoint(ctx, postgres.GetEndpointRequest{Name: e.Endpoint()}); err != nil || ep.Status.CurrentState != postgres.EndpointStatusStateIdle {
		t.Errorf("suspended endpoint: %v", err)
	}
}

// TestTwoEmulatorsAllDoors starts two emulators at once and uses every
// door of each: direct port, front door (with a suspend), pooler.
func TestTwoEmulatorsAllDoors(t *testing.T) {
	var wg sync.WaitGroup
	emus := make([]*Emulator, 2)
	errs := make([]error, 2)
	for i := range emus {
		wg.Go(func() { emus[i], errs[i] = New(t.Context()) })
	}
	wg.Wait()
	for i, e := range emus {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		t.Cleanup(func() { _ = e.Close() })
	}
	if emus[0].FrontDoorPort() == emus[1].FrontDoorPort() || emus[0].PoolerPort() == emus[1].PoolerPort() || emus[0].Port() == emus[1].Port() {
		t.Fatal("two emulators share a port")
	}
	for i, e := range emus {
		wg.Go(func() {
			ctx := t.Context()
			sp := e.ServicePrincipal()
			tok := e.MintToken(sp, time.Hour)
			if err := loginAt(ctx, e, e.Host(), e.Port(), sp, tok); err != nil {
				t.Errorf("emulator %d direct: %v", i, err)
			}
			e.SetWakeDelay(0)
			e.Suspend()
			if err := loginAt(ctx, e, e.Host(), e.FrontDoorPort(), sp, tok); err != nil || e.WakeUps() != 1 {
				t.Errorf("emulator %d front door: %v, wake-ups %d", i, err, e.WakeUps())
			}
			var pgErr *pgconn.PgError
			if err := loginAt(ctx, e, e.PoolerHost(), e.PoolerPort(), sp, tok); !errors.As(err, &pgErr) || pgErr.Code != "08P01" {
				t.Errorf("emulator %d pooler: %v", i, err)
			}
			// A token of one emulator is unknown to the other.
			other := emus[1-i]
			wantAuthFailure(t, "token of the other emulator", loginAt(ctx, other, other.Host(), other.Port(), sp, tok))
		})
	}
	wg.Wait()
}

// TestStartWithAppEnvExported: a test that exported one emulator's AppEnv
// (PGPORT, ...) can still start another (PostgreSQL reads PGPORT).
func TestStartWithAppEnvExported(t *testing.T) {
	a := Start(t)
	setAppEnv(t, a)
	t.Setenv("PGPORT", "")
	b := Start(t)
	sp := b.ServicePrincipal()
	if err := loginAt(t.Context(), b, b.Host(), b.Port(), sp, b.MintToken(sp, time.Hour)); err != nil {
		t.Error(err)
	}
}
