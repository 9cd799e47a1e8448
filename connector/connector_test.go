package connector

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/goleak"

	"github.com/lakebase-go/lakebase/internal/leaktest"

	"github.com/lakebase-go/lakebase/lakebasetest"
	"github.com/lakebase-go/lakebase/tokensource"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(withStandbys{m}, leaktest.Options()...) // readonly_test.go
}

type staticSource struct{ tok tokensource.Token }

func (s staticSource) Token(context.Context) (tokensource.Token, error) { return s.tok, nil }

// syncBuffer is a goroutine-safe log sink.
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

// fastRotation makes 3-second tokens usable: refresh one second before
// expiry, hand out nothing that expires within half a second.
func fastRotation() tokensource.Options {
	return tokensource.Options{
		EarlyRefresh:       time.Second,
		SafetyMargin:       500 * time.Millisecond,
		BackgroundRetryMin: 200 * time.Millisecond,
		BackgroundRetryMax: time.Second,
	}
}

// baseConfig connects to the emulator as its service principal with no
// environment at all.
func baseConfig(t *testing.T, e *lakebasetest.Emulator, logs *syncBuffer) Config {
	t.Helper()
	w := e.WorkspaceConfig()
	var logger *slog.Logger
	if logs != nil {
		logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return Config{
		Endpoint:        e.Endpoint(),
		Host:            e.Host(),
		Port:            e.Port(),
		Database:        e.Database(),
		User:            e.ServicePrincipal(),
		SSLRootCert:     e.CAFile(),
		WorkspaceConfig: w,
		Logger:          logger,
		LookupEnv:       envMap(nil),
	}
}

func mustNew(t *testing.T, cfg Config) *Connector {
	t.Helper()
	c, err := New(t.Context(), cfg)
	if err != nil {
		t.Fatalf("connector.New: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func currentUser(t *testing.T, db *sql.DB) string {
	t.Helper()
	var u string
	if err := db.QueryRowContext(t.Context(), "SELECT current_user").Scan(&u); err != nil {
		t.Fatal(err)
	}
	return u
}

func TestNewConnectionsUseCurrentTokenOneFetchPerLifetime(t *testing.T) {
	e := lakebasetest.Start(t)
	c := mustNew(t, baseConfig(t, e, nil))
	db := sql.OpenDB(c)
	defer db.Close()
	db.SetMaxIdleConns(0) // every query opens a new physical connection

	for i := 0; i < 20; i++ {
		if got := currentUser(t, db); got != e.ServicePrincipal() {
			t.Fatalf("current_user = %q, want %q", got, e.ServicePrincipal())
		}
	}
	if got := e.Logins(e.ServicePrincipal()); got < 20 {
		t.Errorf("logins = %d, want >= 20 (one per new connection)", got)
	}
	if got := e.Calls(lakebasetest.RouteCredentials); got != 1 {
		t.Errorf("credential calls = %d, want exactly 1 for 20 connections within one token lifetime", got)
	}
}

func TestRotationKeepsPoolWorking(t *testing.T) {
	if testing.Short() {
		t.Skip("rotation test takes ~10 s")
	}
	e := lakebasetest.Start(t, lakebasetest.WithMinTTL(time.Second), lakebasetest.WithTTL(3*time.Second))
	cfg := baseConfig(t, e, nil)
	cfg.Token = fastRotation()
	c := mustNew(t, cfg)
	db := OpenDB(c)
	defer db.Close()

	// A long-lived connection outlives every token it never needed again.
	long, err := db.Conn(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer long.Close()
	var pid int
	if err := long.QueryRowContext(t.Context(), "SELECT pg_backend_pid()").Scan(&pid); err != nil {
		t.Fatal(err)
	}

	db.SetMaxIdleConns(0)
	start := time.Now()
	var queries, failures int
	for time.Since(start) < 10*time.Second {
		var one int
		if err := db.QueryRowContext(t.Context(), "SELECT 1").Scan(&one); err != nil {
			failures++
			t.Errorf("query %d failed: %v", queries, err)
		}
		queries++
	}
	var pid2 int
	if err := long.QueryRowContext(t.Context(), "SELECT pg_backend_pid()").Scan(&pid2); err != nil {
		t.Fatalf("long-lived connection broke after token rotation: %v", err)
	}
	if pid2 != pid {
		t.Errorf("long-lived connection changed backend: %d -> %d", pid, pid2)
	}
	calls := e.Calls(lakebasetest.RouteCredentials)
	t.Logf("%d queries on new connections over %v, %d failures, %d credential calls", queries, time.Since(start).Round(time.Millisecond), failures, calls)
	if calls < 3 {
		t.Errorf("credential calls = %d over 10 s of 3 s tokens, want >= 3 rotations", calls)
	}
	if calls > 12 {
		t.Errorf("credential calls = %d, want about one per token lifetime (<= 12)", calls)
	}
}

func TestRevokedTokenRecoveredByForcedRefresh(t *testing.T) {
	e := lakebasetest.Start(t)
	logs := &syncBuffer{}
	c := mustNew(t, baseConfig(t, e, logs))
	db := sql.OpenDB(c)
	defer db.Close()
	db.SetMaxIdleConns(0)

	currentUser(t, db)
	before := e.Calls(lakebasetest.RouteCredentials)
	e.RevokeRole(e.ServicePrincipal())
	if got := currentUser(t, db); got != e.ServicePrincipal() {
		t.Fatalf("current_user = %q", got)
	}
	if got := e.Calls(lakebasetest.RouteCredentials) - before; got != 1 {
		t.Errorf("credential calls after revocation = %d, want exactly 1 forced refresh", got)
	}
	if !strings.Contains(logs.String(), "login refused with a cached token") {
		t.Errorf("expected a warning about the refused login, logs:\n%s", logs)
	}
}

func TestUserWithoutRoleGetsGuidance(t *testing.T) {
	e := lakebasetest.Start(t)
	bearer := e.AddIdentityWithoutRole("nobody@example.com")
	w := e.WorkspaceConfigFor(bearer)
	cfg := baseConfig(t, e, nil)
	cfg.WorkspaceConfig = w
	cfg.User = "" // looked up through Me
	c := mustNew(t, cfg)
	if c.Role() != "nobody@example.com" {
		t.Fatalf("Role() = %q, want the Me user name", c.Role())
	}
	db := sql.OpenDB(c)
	defer db.Close()
	err := db.PingContext(t.Context())
	var le *LoginError
	if !errors.As(err, &le) {
		t.Fatalf("want *LoginError, got %v", err)
	}
	msg := err.Error()
	for _, want := range []string{"nobody@example.com", "databricks_create_role", le.Code} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not contain %q", msg, want)
		}
	}
	if le.Code != "28P01" && le.Code != "28000" {
		t.Errorf("Code = %q", le.Code)
	}
}

func TestHostAndUserResolvedThroughWorkspace(t *testing.T) {
	e := lakebasetest.Start(t)
	cfg := baseConfig(t, e, nil)
	cfg.Host, cfg.User = "", ""
	c := mustNew(t, cfg)
	if c.Host() != e.Host() {
		t.Errorf("Host() = %q, want %q from GET endpoint", c.Host(), e.Host())
	}
	if c.Role() != e.ServicePrincipal() {
		t.Errorf("Role() = %q, want %q from Me", c.Role(), e.ServicePrincipal())
	}
	if e.Calls(lakebasetest.RouteEndpoint) < 1 || e.Calls(lakebasetest.RouteMe) != 1 {
		t.Errorf("endpoint calls %d, Me calls %d", e.Calls(lakebasetest.RouteEndpoint), e.Calls(lakebasetest.RouteMe))
	}
	db := sql.OpenDB(c)
	defer db.Close()
	if got := currentUser(t, db); got != e.ServicePrincipal() {
		t.Errorf("current_user = %q", got)
	}
}

func TestMeLookupFailureIsConfigError(t *testing.T) {
	e := lakebasetest.Start(t)
	cfg := baseConfig(t, e, nil)
	cfg.User = ""
	e.FailNext(lakebasetest.RouteMe, 1, 403, "PERMISSION_DENIED")
	_, err := New(t.Context(), cfg)
	var ce *ConfigError
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), "PGUSER") {
		t.Fatalf("want a ConfigError telling how to set the user, got %v", err)
	}
}

func TestHostAndUserGivenMakeNoWorkspaceCall(t *testing.T) {
	e := lakebasetest.Start(t)
	cfg := baseConfig(t, e, nil)
	cfg.Host = "127.0.0.1" // differs from the endpoint's host: no call checks it
	cfg.Token.Mode = tokensource.Lazy
	e.ResetCalls()
	c := mustNew(t, cfg)
	if n := e.Calls(lakebasetest.RouteEndpoint) + e.Calls(lakebasetest.RouteMe) + e.Calls(lakebasetest.RouteCredentials); n != 0 {
		t.Errorf("New made %d workspace calls with Host and User given, want 0", n)
	}
	db := sql.OpenDB(c)
	defer db.Close()
	currentUser(t, db)
	if n := e.Calls(lakebasetest.RouteEndpoint); n != 0 {
		t.Errorf("endpoint look-ups = %d, want 0", n)
	}
}

func TestEnvironmentOnly(t *testing.T) {
	e := lakebasetest.Start(t)
	w := e.WorkspaceConfig()
	env := e.Env()
	c := mustNew(t, Config{WorkspaceConfig: w, LookupEnv: envMap(env)})
	db := sql.OpenDB(c)
	defer db.Close()
	if got := currentUser(t, db); got != e.ServicePrincipal() {
		t.Errorf("current_user = %q", got)
	}
}

func TestProvisionedInstance(t *testing.T) {
	e := lakebasetest.Start(t)
	cfg := baseConfig(t, e, nil)
	cfg.Endpoint, cfg.Instance, cfg.Host = "", e.Instance(), ""
	c := mustNew(t, cfg)
	db := sql.OpenDB(c)
	defer db.Close()
	db.SetMaxIdleConns(0)
	for i := 0; i < 3; i++ {
		currentUser(t, db)
	}
	if got := e.Calls(lakebasetest.RouteInstanceCredentials); got != 1 {
		t.Errorf("instance credential calls = %d, want 1", got)
	}
	if got := e.Calls(lakebasetest.RouteInstance); got != 1 {
		t.Errorf("instance lookups = %d, want 1", got)
	}
}

func TestTLSPolicyAgainstEmulator(t *testing.T) {
	e := lakebasetest.Start(t)
	wrongCA := filepath.Join(t.TempDir(), "other-ca.pem")
	other := lakebasetest.Start(t)
	if err := os.WriteFile(wrongCA, other.CAPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	ping := func(mut func(*Config)) error {
		cfg := baseConfig(t, e, nil)
		mut(&cfg)
		c, err := New(t.Context(), cfg)
		if err != nil {
			return err
		}
		db := sql.OpenDB(c)
		defer db.Close()
		return db.PingContext(t.Context())
	}
	if err := ping(func(*Config) {}); err != nil {
		t.Errorf("verify-full with the right CA: %v", err)
	}
	if err := ping(func(c *Config) { c.SSLMode = "require" }); err != nil {
		t.Errorf("require (upgraded to verify-full) with the right CA: %v", err)
	}
	if err := ping(func(c *Config) { c.SSLRootCert = wrongCA }); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("verify-full with the wrong CA must fail with a certificate error, got %v", err)
	}
	if err := ping(func(c *Config) { c.SSLMode = "require"; c.SSLRootCert = wrongCA }); err == nil {
		t.Error("require must verify like verify-full: the wrong CA must fail")
	}
	err := ping(func(c *Config) { c.SSLMode = "disable" })
	if err == nil {
		t.Error("sslmode=disable against a hostssl-only server must fail")
	} else if !strings.Contains(err.Error(), "no encryption") && !strings.Contains(err.Error(), "pg_hba.conf") {
		t.Errorf("disable against hostssl-only: unclear error %v", err)
	}
	if err := ping(func(c *Config) { c.SSLMode = "allow" }); err == nil || !strings.Contains(err.Error(), "verify-full") {
		t.Errorf("allow must be rejected with the accepted values, got %v", err)
	}
}

func TestDisableNeverFallsBackToTLSAndTLSNeverFallsBackToPlaintext(t *testing.T) {
	plain := lakebasetest.Start(t, lakebasetest.WithPlaintextOnly())
	ping := func(mode string) error {
		cfg := baseConfig(t, plain, nil)
		cfg.SSLMode = mode
		c, err := New(t.Context(), cfg)
		if err != nil {
			return err
		}
		db := sql.OpenDB(c)
		defer db.Close()
		return db.PingContext(t.Context())
	}
	for _, mode := range []string{"", "prefer", "require", "verify-ca", "verify-full"} {
		if err := ping(mode); err == nil {
			t.Errorf("sslmode=%q against a plaintext-only server connected: plaintext fallback", mode)
		}
	}
	if err := ping("disable"); err != nil {
		t.Errorf("sslmode=disable against a plaintext-only server: %v", err)
	}
}

func TestCloseStopsBackgroundRefresh(t *testing.T) {
	e := lakebasetest.Start(t)
	// Snapshot after the emulator started; HTTP keep-alive goroutines of the
	// workspace client end when the emulator closes, after this check.
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent(),
		goleak.IgnoreAnyFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreAnyFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreAnyFunction("net/http.(*conn).serve"))
	c, err := New(t.Context(), baseConfig(t, e, nil))
	if err != nil {
		t.Fatal(err)
	}
	db := OpenDB(c)
	currentUser(t, db)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Connect(t.Context()); !errors.Is(err, tokensource.ErrClosed) {
		t.Errorf("Connect after Close: %v, want ErrClosed", err)
	}
}

func TestPgxPoolRotates(t *testing.T) {
	e := lakebasetest.Start(t, lakebasetest.WithMinTTL(time.Second), lakebasetest.WithTTL(2*time.Second))
	cfg := baseConfig(t, e, nil)
	cfg.Token = fastRotation()
	c := mustNew(t, cfg)
	pc, err := c.PoolConfig()
	if err != nil {
		t.Fatal(err)
	}
	pc.MaxConnLifetime = 300 * time.Millisecond // force new physical connections
	pc.MaxConnLifetimeJitter = 0
	pool, err := pgxpool.NewWithConfig(t.Context(), pc)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		var u string
		if err := pool.QueryRow(t.Context(), "SELECT current_user").Scan(&u); err != nil {
			t.Fatalf("pgxpool query: %v", err)
		}
		if u != e.ServicePrincipal() {
			t.Fatalf("current_user = %q", u)
		}
	}
	if got := e.Calls(lakebasetest.RouteCredentials); got < 2 {
		t.Errorf("credential calls = %d over 5 s of 2 s tokens, want rotation", got)
	}
}

func TestBeforeConnectSetsOnlyPasswordOnCopy(t *testing.T) {
	c := &Connector{source: staticSource{tokensource.Token{Value: "tok-123", Expiry: time.Now().Add(time.Hour)}}, login: newLoginPolicy(&Config{Logger: discard}), cfg: &resolved{}}
	base, err := pgx.ParseConfig("host=h user=u password=placeholder sslmode=disable")
	if err != nil {
		t.Fatal(err)
	}
	base.Password = ""
	c.base = *base
	cp := c.base.Copy()
	if err := c.PoolBeforeConnect(t.Context(), cp); err != nil {
		t.Fatal(err)
	}
	if cp.Password != "tok-123" {
		t.Errorf("copy password = %q", cp.Password)
	}
	if c.base.Password != "" {
		t.Error("BeforeConnect mutated the shared base config")
	}
	if cp.Host != "h" || cp.User != "u" {
		t.Error("BeforeConnect changed more than the password")
	}
}

func TestNoTokenInErrorsOrLogs(t *testing.T) {
	e := lakebasetest.Start(t)
	logs := &syncBuffer{}
	const secret = "lbt_RECOGNISABLE_SECRET_TOKEN_VALUE_0123456789"
	// A token the server rejects: every path reports errors and logs.
	cfg := baseConfig(t, e, logs)
	cfg.Endpoint = ""
	cfg.TokenSource = staticSource{tokensource.Token{Value: secret, Expiry: time.Now().Add(time.Hour)}}
	c := mustNew(t, cfg)
	db := sql.OpenDB(c)
	defer db.Close()
	err := db.PingContext(t.Context())
	if err == nil {
		t.Fatal("a foreign token must be refused")
	}
	var le *LoginError
	if !errors.As(err, &le) {
		t.Errorf("want *LoginError, got %T %v", err, err)
	}
	// A static password that is wrong.
	cfg2 := baseConfig(t, e, logs)
	cfg2.Endpoint, cfg2.Password = "", secret
	c2 := mustNew(t, cfg2)
	db2 := sql.OpenDB(c2)
	defer db2.Close()
	err2 := db2.PingContext(t.Context())
	for _, s := range []string{err.Error(), err2.Error(), logs.String()} {
		if strings.Contains(s, secret) || strings.Contains(s, "RECOGNISABLE") {
			t.Errorf("secret leaked: %s", s)
		}
	}
}

func TestLoginTimeoutHonoursContext(t *testing.T) {
	e := lakebasetest.Start(t)
	cfg := baseConfig(t, e, nil)
	cfg.Token.Mode = tokensource.Lazy
	c := mustNew(t, cfg)
	e.SetLatency(lakebasetest.RouteCredentials, 10*time.Second)
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := c.Connect(ctx)
	if err == nil {
		t.Fatal("connect with a 10 s slow API and a 300 ms deadline succeeded")
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Errorf("Connect returned after %v, long past its 300 ms context", el)
	}
}
