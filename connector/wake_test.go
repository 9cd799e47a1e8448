package connector

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/lakebase-go/lakebase/lakebasetest"
	"github.com/lakebase-go/lakebase/tokensource"
)

var wakeModes = map[string]lakebasetest.WakeMode{"refuse": lakebasetest.WakeRefuse, "57P03": lakebasetest.WakeStartingUp}

// newPool opens a pgxpool on c's PoolConfig and pings it once (the token is
// then cached), then closes its connections, as a scale to zero does.
func newPool(t *testing.T, c *Connector) *pgxpool.Pool {
	t.Helper()
	pc, err := c.PoolConfig()
	if err != nil {
		t.Fatal(err)
	}
	pool, err := pgxpool.NewWithConfig(t.Context(), pc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if err := pool.Ping(t.Context()); err != nil {
		t.Fatal(err)
	}
	pool.Reset() // the suspend cuts every connection: the next Ping logs in anew
	return pool
}

// TestPgxPoolColdStartRiddenThrough: the first pool.Ping after a suspend
// with a 3 s wake succeeds, with no extra credential call and one INFO
// line, whether the waking endpoint closes connections or answers 57P03.
func TestPgxPoolColdStartRiddenThrough(t *testing.T) {
	for name, mode := range wakeModes {
		t.Run(name, func(t *testing.T) {
			const wake = 3 * time.Second
			e := lakebasetest.Start(t)
			logs := &syncBuffer{}
			cfg := baseConfig(t, e, logs)
			cfg.Port = e.FrontDoorPort()
			c := mustNew(t, cfg)
			pool := newPool(t, c)
			e.SetWakeMode(mode)
			e.SetWakeDelay(wake)
			e.Suspend()
			calls := e.Calls(lakebasetest.RouteCredentials)
			refused := e.RefusedWhileWaking()
			start := time.Now()
			if err := pool.Ping(t.Context()); err != nil {
				t.Fatalf("first pool.Ping after suspend: %v", err)
			}
			took := time.Since(start)
			attempts := e.RefusedWhileWaking() - refused
			t.Logf("first pool.Ping after a %v wake: %v (%d attempts refused while waking)", wake, took.Round(time.Millisecond), attempts)
			if took > wake+coldStartMax+2*time.Second {
				t.Errorf("took %v, want at most wake + one backoff step + one login", took)
			}
			if got := e.Calls(lakebasetest.RouteCredentials) - calls; got != 0 {
				t.Errorf("credential calls during the wake = %d, want 0", got)
			}
			if attempts < 2 {
				t.Errorf("%d attempts refused while waking: the wake was not exercised", attempts)
			}
			if n := strings.Count(logs.String(), "endpoint waking up, retrying"); n != 1 {
				t.Errorf("%d wake-up INFO lines, want 1", n)
			}
			var one int
			if err := pool.QueryRow(t.Context(), "SELECT 1").Scan(&one); err != nil || one != 1 {
				t.Errorf("query after the wake: %v", err)
			}
		})
	}
}

// TestPgxPoolWakeLongerThanConnectTimeout: past ConnectTimeout the pgxpool
// path fails with an error that wraps a *WakeError (transient, naming the
// host, wrapping context.DeadlineExceeded), within ConnectTimeout + 0.5 s.
func TestPgxPoolWakeLongerThanConnectTimeout(t *testing.T) {
	for name, mode := range wakeModes {
		t.Run(name, func(t *testing.T) {
			e := lakebasetest.Start(t)
			cfg := baseConfig(t, e, nil)
			cfg.Port = e.FrontDoorPort()
			cfg.ConnectTimeout = 2 * time.Second
			c := mustNew(t, cfg)
			pool := newPool(t, c)
			e.SetWakeMode(mode)
			e.SetWakeDelay(time.Minute)
			e.Suspend()
			defer e.Resume()
			start := time.Now()
			err := pool.Ping(t.Context())
			took := time.Since(start)
			var we *WakeError
			if !errors.As(err, &we) || we.Host != e.Host() || we.Attempts < 2 {
				t.Fatalf("want a *WakeError naming the host after several attempts, got %T %v", err, err)
			}
			if !tokensource.IsTransient(err) || !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("WakeError: IsTransient %v, wraps DeadlineExceeded %v: %v", tokensource.IsTransient(err), errors.Is(err, context.DeadlineExceeded), err)
			}
			if !strings.Contains(err.Error(), "ConnectTimeout") {
				t.Errorf("the error does not say ConnectTimeout ran out: %v", err)
			}
			t.Logf("%v, %d attempts: %v", took.Round(time.Millisecond), we.Attempts, err)
			if took > cfg.ConnectTimeout+500*time.Millisecond {
				t.Errorf("took %v with ConnectTimeout %v", took, cfg.ConnectTimeout)
			}
		})
	}
}

// TestWakeErrorWrapsCallerContext: when the caller's context ends during
// the wake, the WakeError wraps the caller's ctx.Err() and says so. (On the
// pgxpool path pgxpool itself returns ctx.Err() to a caller that gives up:
// the connection attempt carries on in the background until
// ConnectTimeout or pool.Close.)
func TestWakeErrorWrapsCallerContext(t *testing.T) {
	e := lakebasetest.Start(t)
	cfg := baseConfig(t, e, nil)
	cfg.Port = e.FrontDoorPort()
	c := mustNew(t, cfg)
	db := OpenDB(c, WithMaxIdleConns(-1))
	defer db.Close()
	if err := db.PingContext(t.Context()); err != nil {
		t.Fatal(err)
	}
	e.SetWakeDelay(time.Minute)
	e.Suspend()
	defer e.Resume()
	paths := map[string]func(ctx context.Context) error{
		"database/sql": db.PingContext,
		"Connect":      func(ctx context.Context) error { return connectOnce(ctx, c) },
	}
	for name, ping := range paths {
		for _, want := range []error{context.DeadlineExceeded, context.Canceled} {
			ctx, cancel := context.WithTimeout(t.Context(), 700*time.Millisecond)
			if want == context.Canceled {
				ctx, cancel = context.WithCancel(t.Context())
				time.AfterFunc(700*time.Millisecond, cancel) // the caller gives up during the wake
			}
			err := ping(ctx)
			cancel()
			var we *WakeError
			if !errors.As(err, &we) || !errors.Is(err, want) || !strings.Contains(err.Error(), "caller's context") {
				t.Errorf("%s, caller %v: want a *WakeError wrapping it, got %v", name, want, err)
				continue
			}
			if !tokensource.IsTransient(err) {
				t.Errorf("%s: WakeError not transient", name)
			}
		}
	}
}

// TestPgxPoolWakeThenRevokedToken: a compound fault. The token is revoked
// while the endpoint wakes: the login after the wake is refused (the wake
// retries do not retry that refusal), and the next connection recovers
// with one forced refresh.
func TestPgxPoolWakeThenRevokedToken(t *testing.T) {
	e := lakebasetest.Start(t)
	cfg := baseConfig(t, e, nil)
	cfg.Port = e.FrontDoorPort()
	c := mustNew(t, cfg)
	pool := newPool(t, c)
	e.SetWakeMode(lakebasetest.WakeStartingUp)
	e.SetWakeDelay(500 * time.Millisecond)
	e.Suspend()
	e.RevokeRole(e.ServicePrincipal())
	calls := e.Calls(lakebasetest.RouteCredentials)
	start := time.Now()
	err := pool.Ping(t.Context())
	if err == nil || coldStart(err) || !credentialRefused(err) {
		t.Fatalf("first Ping: want the refusal of the revoked token, got %v", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("the refusal took %v: it was retried as a cold start", took)
	}
	if err := pool.Ping(t.Context()); err != nil {
		t.Fatalf("no recovery on the next connection: %v", err)
	}
	if got := e.Calls(lakebasetest.RouteCredentials) - calls; got != 1 {
		t.Errorf("credential calls = %d, want 1 forced refresh", got)
	}
}

// TestWakeThenRevokedToken: the same compound fault on the database/sql
// path, where the refused login is recovered inside the same connection:
// one forced refresh, one retry, no error.
func TestWakeThenRevokedToken(t *testing.T) {
	e := lakebasetest.Start(t)
	cfg := baseConfig(t, e, nil)
	cfg.Port = e.FrontDoorPort()
	c := mustNew(t, cfg)
	db := OpenDB(c, WithMaxIdleConns(-1))
	defer db.Close()
	if err := db.PingContext(t.Context()); err != nil {
		t.Fatal(err)
	}
	e.SetWakeMode(lakebasetest.WakeStartingUp)
	e.SetWakeDelay(500 * time.Millisecond)
	e.Suspend()
	e.RevokeRole(e.ServicePrincipal())
	calls := e.Calls(lakebasetest.RouteCredentials)
	if err := db.PingContext(t.Context()); err != nil {
		t.Fatalf("first Ping after the wake with a revoked token: %v", err)
	}
	if got := e.Calls(lakebasetest.RouteCredentials) - calls; got != 1 {
		t.Errorf("credential calls = %d, want 1 forced refresh", got)
	}
	if e.RefusedWhileWaking() == 0 {
		t.Error("no connection was refused while waking: the wake was not exercised")
	}
}

// TestPgxPoolCancelAfterWake: a cancel request for a connection the wake
// path established reaches the server (pgx dials it through the same
// dialer, encrypted) and cancels the query; the connection stays usable.
func TestPgxPoolCancelAfterWake(t *testing.T) {
	e := lakebasetest.Start(t)
	cfg := baseConfig(t, e, nil)
	cfg.Port = e.FrontDoorPort()
	c := mustNew(t, cfg)
	pool := newPool(t, c)
	e.SetWakeDelay(200 * time.Millisecond)
	e.Suspend()
	conn, err := pool.Acquire(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	done := make(chan error, 1)
	go func() {
		_, err := conn.Exec(context.Background(), "SELECT pg_sleep(30)")
		done <- err
	}()
	deadline := time.After(10 * time.Second)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var cancels int
	for err == nil {
		select {
		case err = <-done:
			if err == nil {
				t.Fatal("pg_sleep(30) returned without an error")
			}
		case <-tick.C:
			// Until the query runs, a cancel request finds nothing to cancel.
			cancels++
			if cerr := conn.Conn().PgConn().CancelRequest(t.Context()); cerr != nil {
				t.Fatalf("cancel request: %v", cerr)
			}
		case <-deadline:
			t.Fatal("the query was not cancelled within 10 s")
		}
	}
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "57014" {
		t.Fatalf("want SQLSTATE 57014 (query canceled), got %v", err)
	}
	t.Logf("cancelled after %d cancel requests", cancels)
	var one int
	if err := conn.QueryRow(t.Context(), "SELECT 1").Scan(&one); err != nil {
		t.Errorf("the connection is unusable after the cancel: %v", err)
	}
}
