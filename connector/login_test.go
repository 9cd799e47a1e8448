package connector

import (
	"context"
	"database/sql"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/XSAM/otelsql"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/lakebase-go/lakebase/lakebasetest"
	"github.com/lakebase-go/lakebase/tokensource"
)

// attempts makes 20 sequential and 20 concurrent connection attempts and
// returns their errors.
func attempts(t *testing.T, c *Connector) []error {
	t.Helper()
	var errs []error
	for range 20 {
		conn, err := c.Connect(t.Context())
		if conn != nil {
			conn.Close()
		}
		errs = append(errs, err)
	}
	var (
		mu sync.Mutex
		wg sync.WaitGroup
	)
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := c.Connect(t.Context())
			if conn != nil {
				conn.Close()
			}
			mu.Lock()
			errs = append(errs, err)
			mu.Unlock()
		}()
	}
	wg.Wait()
	return errs
}

// TestMissingRoleMintsNothing: a role that does not exist costs no
// credential call per attempt.
func TestMissingRoleMintsNothing(t *testing.T) {
	e := lakebasetest.Start(t)
	bearer := e.AddIdentityWithoutRole("ghost@example.com")
	w := e.WorkspaceConfigFor(bearer)
	logs := &syncBuffer{}
	cfg := baseConfig(t, e, logs)
	cfg.WorkspaceConfig, cfg.User = w, "ghost@example.com"
	cfg.Token.Mode = tokensource.Lazy
	c := mustNew(t, cfg)
	defer c.Close()
	e.ResetCalls()
	for i, err := range attempts(t, c) {
		var le *LoginError
		if !errors.As(err, &le) || le.Reason != LoginRoleMissing || le.Role != "ghost@example.com" {
			t.Fatalf("attempt %d: want a LoginError (role missing) naming the role, got %v", i, err)
		}
		if !strings.Contains(err.Error(), "databricks_create_role('ghost@example.com'") {
			t.Fatalf("attempt %d: no create-role fix: %v", i, err)
		}
	}
	calls := e.Calls(lakebasetest.RouteCredentials)
	t.Logf("credential calls for 40 attempts with a missing role: %d", calls)
	if calls > 3 {
		t.Errorf("credential calls = %d, want at most 3", calls)
	}
	if n := strings.Count(logs.String(), "level=WARN"); n > 3 {
		t.Errorf("%d WARN lines for 40 attempts", n)
	}
}

// TestRefusedCredentialRefreshBounded: tokens the server refuses for the
// role (minted for another identity) force one refresh per interval, shared
// by concurrent logins.
func TestRefusedCredentialRefreshBounded(t *testing.T) {
	e := lakebasetest.Start(t)
	if _, err := e.AddUser(t.Context(), "bob@example.com"); err != nil {
		t.Fatal(err)
	}
	cfg := baseConfig(t, e, nil) // mints as the service principal...
	cfg.User = "bob@example.com" // ...but logs in as bob
	cfg.Token.Mode = tokensource.Lazy
	c := mustNew(t, cfg)
	defer c.Close()
	e.ResetCalls()
	for i, err := range attempts(t, c) {
		var le *LoginError
		if !errors.As(err, &le) || le.Reason != LoginCredentialRefused {
			t.Fatalf("attempt %d: want a LoginError (credential refused), got %v", i, err)
		}
	}
	calls := e.Calls(lakebasetest.RouteCredentials)
	t.Logf("credential calls for 40 refused attempts: %d", calls)
	if calls > 3 {
		t.Errorf("credential calls = %d, want at most 3", calls)
	}
}

// TestPgxPoolRecoversFromRevokedToken: on the pgxpool path a refused
// token is marked and the next BeforeConnect forces one refresh.
func TestPgxPoolRecoversFromRevokedToken(t *testing.T) {
	e := lakebasetest.Start(t)
	c := mustNew(t, baseConfig(t, e, nil))
	defer c.Close()
	pc, err := c.PoolConfig()
	if err != nil {
		t.Fatal(err)
	}
	pool, err := pgxpool.NewWithConfig(t.Context(), pc)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	one := func() error {
		conn, err := pool.Acquire(t.Context())
		if err != nil {
			return err
		}
		defer conn.Release()
		defer conn.Conn().Close(context.Background()) // force a new login next time
		return conn.Conn().Ping(t.Context())
	}
	if err := one(); err != nil {
		t.Fatal(err)
	}
	before := e.Calls(lakebasetest.RouteCredentials)
	e.RevokeRole(e.ServicePrincipal())
	first := one()
	if first == nil {
		t.Fatal("a revoked token still logged in")
	}
	if err := one(); err != nil {
		t.Fatalf("no recovery on the next connection: %v", err)
	}
	if got := e.Calls(lakebasetest.RouteCredentials) - before; got != 1 {
		t.Errorf("credential calls = %d, want 1 forced refresh", got)
	}
}

// TestColdStartRiddenThrough: a suspended endpoint that takes 3 s to wake
// answers the first PingContext, with no extra credential call and one
// INFO line.
func TestColdStartRiddenThrough(t *testing.T) {
	for _, mode := range []lakebasetest.WakeMode{lakebasetest.WakeRefuse, lakebasetest.WakeStartingUp} {
		t.Run(map[lakebasetest.WakeMode]string{lakebasetest.WakeRefuse: "refuse", lakebasetest.WakeStartingUp: "57P03"}[mode], func(t *testing.T) {
			const wake = 3 * time.Second
			e := lakebasetest.Start(t)
			logs := &syncBuffer{}
			cfg := baseConfig(t, e, logs)
			cfg.Port = e.FrontDoorPort()
			c := mustNew(t, cfg)
			db := OpenDB(c)
			defer db.Close()
			if err := db.PingContext(t.Context()); err != nil { // warm: token cached
				t.Fatal(err)
			}
			db.SetMaxIdleConns(0)
			e.SetWakeMode(mode)
			e.SetWakeDelay(wake)
			e.Suspend()
			calls := e.Calls(lakebasetest.RouteCredentials)
			start := time.Now()
			if err := db.PingContext(t.Context()); err != nil {
				t.Fatalf("first ping after suspend: %v", err)
			}
			took := time.Since(start)
			t.Logf("first ping after a %v wake: %v (wake-ups %d, refused while waking %d)", wake, took.Round(time.Millisecond), e.WakeUps(), e.RefusedWhileWaking())
			if took > wake+coldStartMax+2*time.Second {
				t.Errorf("took %v, want at most wake + one backoff step + one login", took)
			}
			if got := e.Calls(lakebasetest.RouteCredentials) - calls; got != 0 {
				t.Errorf("credential calls during the wake = %d, want 0", got)
			}
			if n := strings.Count(logs.String(), "endpoint waking up, retrying"); n != 1 {
				t.Errorf("%d wake-up INFO lines, want 1", n)
			}
		})
	}
}

// TestWakeLongerThanConnectTimeout: a typed transient error naming the
// host, within ConnectTimeout + 0.5 s.
func TestWakeLongerThanConnectTimeout(t *testing.T) {
	e := lakebasetest.Start(t)
	cfg := baseConfig(t, e, nil)
	cfg.Port = e.FrontDoorPort()
	cfg.ConnectTimeout = 2 * time.Second
	c := mustNew(t, cfg)
	db := OpenDB(c)
	defer db.Close()
	e.SetWakeDelay(time.Minute)
	e.Suspend()
	start := time.Now()
	err := db.PingContext(t.Context())
	took := time.Since(start)
	var we *WakeError
	if !errors.As(err, &we) || !we.Transient() || !tokensource.IsTransient(err) || !errors.Is(err, context.DeadlineExceeded) || we.Host != e.Host() {
		t.Fatalf("want a *WakeError naming the host, got %T %v", err, err)
	}
	if took > cfg.ConnectTimeout+500*time.Millisecond {
		t.Errorf("took %v with ConnectTimeout %v", took, cfg.ConnectTimeout)
	}
	e.Resume()
}

// TestPoolerRefusesTokenLogins: the pooler host refuses token logins with a
// LoginError that says so; it is not retried as a cold start.
func TestPoolerRefusesTokenLogins(t *testing.T) {
	e := lakebasetest.Start(t)
	cfg := baseConfig(t, e, nil)
	cfg.Host, cfg.Port = e.PoolerHost(), e.PoolerPort()
	c := mustNew(t, cfg)
	db := OpenDB(c)
	defer db.Close()
	start := time.Now()
	err := db.PingContext(t.Context())
	var le *LoginError
	if !errors.As(err, &le) || le.Reason != LoginPoolerRefused {
		t.Fatalf("want a LoginError (pooler), got %T %v", err, err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("took %v: the pooler's refusal was retried", took)
	}
	// A "-pooler" host name fails at New.
	cfg.Host = "ep-x-pooler.database.example.com"
	if _, err := New(t.Context(), cfg); err == nil {
		t.Error("New accepted a -pooler host for token logins")
	} else {
		var ce *ConfigError
		if !errors.As(err, &ce) || !strings.Contains(ce.Setting, "PGHOST") {
			t.Errorf("want a ConfigError naming Host/PGHOST, got %v", err)
		}
	}
}

type countingTracer struct{ queries atomic.Int64 }

func (ct *countingTracer) TraceQueryStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	if strings.Contains(d.SQL, "4242") {
		ct.queries.Add(1)
	}
	return ctx
}
func (ct *countingTracer) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

// TestUserHooks: Config.BeforeConnect (a tracer, never the token) and
// Config.AfterConnect (a custom type) on OpenDB and PoolConfig; an
// AfterConnect error fails the connect cleanly.
func TestUserHooks(t *testing.T) {
	e := lakebasetest.Start(t)
	if err := e.AdminExec(t.Context(), "CREATE TYPE mood AS ENUM ('happy', 'sad')"); err != nil {
		t.Fatal(err)
	}
	tracer := &countingTracer{}
	var sawPassword atomic.Bool
	cfg := baseConfig(t, e, nil)
	cfg.BeforeConnect = func(_ context.Context, cc *pgx.ConnConfig) error {
		if cc.Password != "" {
			sawPassword.Store(true)
		}
		cc.Tracer = tracer
		return nil
	}
	cfg.AfterConnect = func(ctx context.Context, conn *pgx.Conn) error {
		types, err := conn.LoadTypes(ctx, []string{"mood", "_mood"})
		if err != nil {
			return err
		}
		conn.TypeMap().RegisterTypes(types)
		return nil
	}
	scanMoods := func(conn *pgx.Conn) error {
		var moods []string
		if err := conn.QueryRow(t.Context(), "SELECT ARRAY['happy','sad']::mood[]").Scan(&moods); err != nil {
			return err
		}
		if len(moods) != 2 || moods[1] != "sad" {
			t.Errorf("moods = %v", moods)
		}
		return nil
	}
	for _, telemetry := range []bool{false, true} {
		cfg.Telemetry = telemetry
		c := mustNew(t, cfg)
		db := OpenDB(c)
		var n int
		if err := db.QueryRowContext(t.Context(), "SELECT 4242").Scan(&n); err != nil {
			t.Fatal(err)
		}
		if err := WithPgxConn(t.Context(), db, scanMoods); err != nil {
			t.Errorf("telemetry=%v: custom type through WithPgxConn: %v", telemetry, err)
		}
		// Raw access for CopyFrom.
		err := WithPgxConn(t.Context(), db, func(conn *pgx.Conn) error {
			if _, err := conn.Exec(t.Context(), "CREATE TEMP TABLE t (v int)"); err != nil {
				return err
			}
			n, err := conn.CopyFrom(t.Context(), pgx.Identifier{"t"}, []string{"v"}, pgx.CopyFromRows([][]any{{1}, {2}, {3}}))
			if err == nil && n != 3 {
				t.Errorf("CopyFrom copied %d rows", n)
			}
			return err
		})
		if err != nil {
			t.Errorf("telemetry=%v: CopyFrom through WithPgxConn: %v", telemetry, err)
		}
		db.Close()
	}
	if tracer.queries.Load() < 2 {
		t.Errorf("tracer saw %d queries", tracer.queries.Load())
	}
	// PoolConfig gets the same hooks.
	c := mustNew(t, cfg)
	defer c.Close()
	pc, err := c.PoolConfig()
	if err != nil {
		t.Fatal(err)
	}
	pool, err := pgxpool.NewWithConfig(t.Context(), pc)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := pool.Acquire(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if err := scanMoods(conn.Conn()); err != nil {
		t.Errorf("custom type on the pgxpool path: %v", err)
	}
	conn.Release()
	pool.Close()
	if sawPassword.Load() {
		t.Error("Config.BeforeConnect saw a password")
	}

	// A failing AfterConnect fails the connect with its error.
	boom := errors.New("boom")
	cfg.Telemetry = false
	cfg.AfterConnect = func(context.Context, *pgx.Conn) error { return boom }
	c2 := mustNew(t, cfg)
	db := sql.OpenDB(c2)
	defer db.Close()
	if err := db.PingContext(t.Context()); !errors.Is(err, boom) {
		t.Errorf("want the AfterConnect error, got %v", err)
	}
}

// TestTelemetryDefaultsAndOverride: the lean defaults record a span per
// query but none per Ping; Config.TelemetryOptions, applied after ours,
// turns Ping spans back on.
func TestTelemetryDefaultsAndOverride(t *testing.T) {
	e := lakebasetest.Start(t)
	spansFor := func(opts ...otelsql.Option) []string {
		rec := tracetest.NewSpanRecorder()
		tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
		defer tp.Shutdown(context.Background())
		cfg := baseConfig(t, e, nil)
		cfg.Telemetry, cfg.TracerProvider, cfg.TelemetryOptions = true, tp, opts
		db := OpenDB(mustNew(t, cfg))
		defer db.Close()
		var n int
		if err := db.QueryRowContext(t.Context(), "SELECT 4242").Scan(&n); err != nil {
			t.Fatal(err)
		}
		if err := db.PingContext(t.Context()); err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, s := range rec.Ended() {
			names = append(names, s.Name())
		}
		return names
	}
	has := func(names []string, sub string) bool {
		for _, n := range names {
			if strings.Contains(n, sub) {
				return true
			}
		}
		return false
	}
	lean := spansFor()
	if !has(lean, "query") || has(lean, "ping") || has(lean, "rows") {
		t.Errorf("default spans %v: want a query span, no ping or rows span", lean)
	}
	if more := spansFor(otelsql.WithSpanOptions(otelsql.SpanOptions{Ping: true})); !has(more, "ping") {
		t.Errorf("with TelemetryOptions Ping: true, spans %v have no ping span", more)
	}
}

// TestQueryExecModePerDB: WithQueryExecMode switches one DB to the simple
// protocol (no server-side prepared statements), leaving others alone.
func TestQueryExecModePerDB(t *testing.T) {
	e := lakebasetest.Start(t)
	c := mustNew(t, baseConfig(t, e, nil))
	prepared := func(db *sql.DB) int {
		db.SetMaxOpenConns(1)
		var one, n int
		if err := db.QueryRowContext(t.Context(), "SELECT $1::int", 1).Scan(&one); err != nil {
			t.Fatal(err)
		}
		if err := db.QueryRowContext(t.Context(), "SELECT count(*) FROM pg_prepared_statements").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	simple := OpenDB(c, WithQueryExecMode(pgx.QueryExecModeSimpleProtocol), WithMaxIdleConns(1))
	def := OpenDB(c, WithMaxIdleConns(1))
	if n := prepared(simple); n != 0 {
		t.Errorf("simple protocol DB: %d prepared statements, want 0", n)
	}
	if n := prepared(def); n == 0 {
		t.Error("default DB: no prepared statements; the check cannot tell the modes apart")
	}
	simple.Close()
	def.Close()
}

// TestPoolOptionsAllApplied: every option passed to OpenDB is applied, in
// order.
func TestPoolOptionsAllApplied(t *testing.T) {
	e := lakebasetest.Start(t)
	db := OpenDB(mustNew(t, baseConfig(t, e, nil)), WithMaxOpenConns(7), WithMaxOpenConns(3), WithConnMaxIdleTime(time.Minute))
	defer db.Close()
	if got := db.Stats().MaxOpenConnections; got != 3 {
		t.Errorf("MaxOpenConnections = %d, want 3 (the later option wins)", got)
	}
	o := resolvePoolOptions(WithMaxIdleConns(2), WithMaxOpenConns(4))
	if o.MaxIdleConns != 2 || o.MaxOpenConns != 4 || o.MaxIdleTime != DefaultMaxIdleTime {
		t.Errorf("resolved %+v", o)
	}
}

// TestOpenDBLifetimeIsPerDB: a second OpenDB on the same connector does not
// change the first DB's connection lifetime.
func TestOpenDBLifetimeIsPerDB(t *testing.T) {
	e := lakebasetest.Start(t)
	c := mustNew(t, baseConfig(t, e, nil))
	noLife := OpenDB(c, WithConnMaxLifetime(-1, 0))
	withLife := OpenDB(c) // default 30 min lifetime with jitter
	hasDeadline := func(db *sql.DB) bool {
		var has bool
		err := WithPgxConn(t.Context(), db, func(conn *pgx.Conn) error {
			_, has = conn.PgConn().CustomData()[deadlineKey].(time.Time)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return has
	}
	if hasDeadline(noLife) {
		t.Error("the DB opened without a lifetime got the other DB's lifetime")
	}
	if !hasDeadline(withLife) {
		t.Error("the DB with the default lifetime has no deadline on its connections")
	}
	withLife.Close() // closes c too
	noLife.Close()
}
