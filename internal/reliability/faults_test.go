package reliability

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lakebase-go/lakebase/connector"
	"github.com/lakebase-go/lakebase/lakebasetest"
	"github.com/lakebase-go/lakebase/tokensource"
)

// newConnections opens n fresh physical connections one after another and
// returns how many failed, with the first error.
func newConnections(ctx context.Context, c *connector.Connector, n int) (failed int, first error) {
	for i := 0; i < n; i++ {
		conn, err := c.Connect(ctx)
		if err != nil {
			failed++
			if first == nil {
				first = err
			}
			continue
		}
		_ = conn.Close()
	}
	return failed, first
}

// An outage that starts inside the refresh window and ends before the token
// expires costs no new connection anything.
func TestOutageInsideRefreshWindow(t *testing.T) {
	e := lakebasetest.Start(t, lakebasetest.WithMinTTL(time.Second), lakebasetest.WithTTL(6*time.Second))
	cfg := config(t, e, nil)
	cfg.Token.EarlyRefresh = 4 * time.Second // refresh window opens 2 s after each mint
	c, _ := open(t, cfg)
	if _, err := c.TokenSource().Token(t.Context()); err != nil {
		t.Fatal(err)
	}
	base := e.Calls(lakebasetest.RouteCredentials)
	e.FailNext(lakebasetest.RouteCredentials, 4, 500, "INTERNAL_ERROR")

	deadline := time.Now().Add(5 * time.Second)
	var opened, failed int
	for time.Now().Before(deadline) {
		f, err := newConnections(t.Context(), c, 1)
		opened++
		if f > 0 {
			failed++
			t.Errorf("new connection failed during a short outage: %v", err)
		}
	}
	calls := e.Calls(lakebasetest.RouteCredentials) - base
	t.Logf("%d new connections during the outage, %d failed; %d credential calls (4 failed)", opened, failed, calls)
	if calls < 5 {
		t.Errorf("credential calls = %d, want the 4 failures plus a successful refresh", calls)
	}
	if calls > 12 {
		t.Errorf("credential calls = %d in 5 s, background retries are not bounded", calls)
	}
}

// An outage longer than the token life fails new connections with a typed,
// transient error, and the pool recovers on its own once the API is back.
func TestOutageLongerThanTokenLife(t *testing.T) {
	e := lakebasetest.Start(t, lakebasetest.WithMinTTL(time.Second), lakebasetest.WithTTL(2*time.Second))
	c, db := open(t, config(t, e, nil))
	if err := db.PingContext(t.Context()); err != nil {
		t.Fatal(err)
	}
	before := settledGoroutines()
	e.FailNext(lakebasetest.RouteCredentials, 1<<30, 500, "INTERNAL_ERROR")

	var err error
	eventually(t, "new connections to fail once the token expired", 10*time.Second, func() bool {
		_, err = newConnections(t.Context(), c, 1)
		return err != nil
	})
	if !tokensource.IsTransient(err) {
		t.Errorf("outage error is not transient: %v", err)
	}
	if !strings.Contains(err.Error(), "500") && !strings.Contains(err.Error(), "INTERNAL_ERROR") {
		t.Errorf("outage error does not name the cause: %v", err)
	}
	// Many callers during the outage must not pile up goroutines.
	var wg sync.WaitGroup
	for i := 0; i < 50; i++ {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
			defer cancel()
			_, _ = newConnections(ctx, c, 1)
		})
	}
	wg.Wait()

	e.FailNext(lakebasetest.RouteCredentials, 0, 0, "") // the API is back
	recovered := time.Now()
	eventually(t, "the pool to recover after the outage", 5*time.Second, func() bool {
		f, _ := newConnections(t.Context(), c, 1)
		return f == 0
	})
	t.Logf("recovered %v after the API came back", time.Since(recovered).Round(time.Millisecond))
	after := settledGoroutines()
	if after > before+10 {
		t.Errorf("goroutines grew from %d to %d across the outage", before, after)
	}
}

// Permanent API errors fail fast: one call per attempt, no retries.
func TestPermanentErrorsFailFast(t *testing.T) {
	e := lakebasetest.Start(t)
	for _, tc := range []struct {
		status int
		code   string
	}{{401, "UNAUTHENTICATED"}, {403, "PERMISSION_DENIED"}, {404, "RESOURCE_DOES_NOT_EXIST"}, {400, "INVALID_PARAMETER_VALUE"}} {
		t.Run(fmt.Sprint(tc.status), func(t *testing.T) {
			cfg := config(t, e, nil)
			cfg.Token.Mode = tokensource.Lazy
			c, _ := open(t, cfg)
			e.ResetCalls()
			e.FailNext(lakebasetest.RouteCredentials, 1<<30, tc.status, tc.code)
			defer e.FailNext(lakebasetest.RouteCredentials, 0, 0, "")
			start := time.Now()
			failed, err := newConnections(t.Context(), c, 20)
			if failed != 20 {
				t.Fatalf("%d of 20 connections failed, want all", failed)
			}
			if tokensource.IsTransient(err) {
				t.Errorf("a %d is classified transient: %v", tc.status, err)
			}
			if !strings.Contains(err.Error(), tc.code) {
				t.Errorf("error does not name %s: %v", tc.code, err)
			}
			calls := e.Calls(lakebasetest.RouteCredentials)
			t.Logf("%d: 20 connection attempts in %v made %d credential calls", tc.status, time.Since(start).Round(time.Millisecond), calls)
			if calls > 2 {
				t.Errorf("credential calls = %d for 20 attempts: a permanent error was retried or not remembered", calls)
			}
		})
	}
}

// Bad credential responses give clear, non-transient errors; a slow API is
// bounded by the caller's context.
func TestBadCredentialResponses(t *testing.T) {
	e := lakebasetest.Start(t)
	for _, tc := range []struct {
		name  string
		fault lakebasetest.Fault
		want  string
	}{
		{"expiry in the past", lakebasetest.FaultExpiredToken, "expir"},
		{"empty token", lakebasetest.FaultEmptyToken, "token"},
		{"missing expiry", lakebasetest.FaultMissingExpiry, "expir"},
		{"malformed JSON", lakebasetest.FaultMalformedJSON, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := config(t, e, nil)
			cfg.Token.Mode = tokensource.Lazy
			c, _ := open(t, cfg)
			e.ResetCalls()
			e.SetFault(lakebasetest.RouteCredentials, tc.fault)
			defer e.SetFault(lakebasetest.RouteCredentials, lakebasetest.FaultNone)
			failed, err := newConnections(t.Context(), c, 5)
			if failed != 5 {
				t.Fatalf("%d of 5 failed", failed)
			}
			if !strings.Contains(strings.ToLower(err.Error()), tc.want) {
				t.Errorf("error %q does not mention %q", err, tc.want)
			}
			if calls := e.Calls(lakebasetest.RouteCredentials); calls > 15 {
				t.Errorf("%d credential calls for 5 attempts: tight loop", calls)
			}
		})
	}
	t.Run("10 s slow API", func(t *testing.T) {
		cfg := config(t, e, nil)
		cfg.Token.Mode = tokensource.Lazy
		cfg.Token.AttemptTimeout = 30 * time.Second
		c, _ := open(t, cfg)
		e.SetLatency(lakebasetest.RouteCredentials, 10*time.Second)
		defer e.SetLatency(lakebasetest.RouteCredentials, 0)
		ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err := c.Connect(ctx)
		if err == nil {
			t.Fatal("connected through a 10 s API with a 300 ms deadline")
		}
		if el := time.Since(start); el > 3*time.Second {
			t.Errorf("Connect took %v with a 300 ms context", el)
		}
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Logf("error (not DeadlineExceeded): %v", err)
		}
	})
}

// A Postgres restart under write load loses no acknowledged insert.
func TestPostgresRestartUnderLoad(t *testing.T) {
	e := lakebasetest.Start(t)
	if err := e.AdminExec(t.Context(), "CREATE TABLE acks (worker int, seq int, PRIMARY KEY (worker, seq))"); err != nil {
		t.Fatal(err)
	}
	if err := e.AdminExec(t.Context(), fmt.Sprintf(`GRANT ALL ON acks TO "%s"`, e.ServicePrincipal())); err != nil {
		t.Fatal(err)
	}
	_, db := open(t, config(t, e, nil))
	db.SetMaxOpenConns(32)

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	type key struct{ w, s int }
	var (
		mu      sync.Mutex
		acked   []key
		errs    atomic.Int64
		started = make(chan struct{})
		wg      sync.WaitGroup
	)
	var once sync.Once
	for w := 0; w < 32; w++ {
		wg.Go(func() {
			for s := 0; ctx.Err() == nil; s++ {
				ictx, icancel := context.WithTimeout(ctx, 5*time.Second)
				_, err := db.ExecContext(ictx, "INSERT INTO acks (worker, seq) VALUES ($1, $2)", w, s)
				icancel()
				if err != nil {
					errs.Add(1)
					continue
				}
				mu.Lock()
				acked = append(acked, key{w, s})
				n := len(acked)
				mu.Unlock()
				if n >= 200 {
					once.Do(func() { close(started) })
				}
			}
		})
	}
	<-started
	if err := e.Restart(t.Context()); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	atRestart := len(acked)
	mu.Unlock()
	eventually(t, "inserts to succeed again after the restart", 20*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(acked) > atRestart+200
	})
	cancel()
	wg.Wait()

	var rows int
	if err := db.QueryRowContext(t.Context(), "SELECT count(*) FROM acks").Scan(&rows); err != nil {
		t.Fatal(err)
	}
	missing := 0
	for _, k := range acked {
		var one int
		if err := db.QueryRowContext(t.Context(), "SELECT 1 FROM acks WHERE worker = $1 AND seq = $2", k.w, k.s).Scan(&one); err != nil {
			missing++
		}
	}
	t.Logf("acknowledged %d inserts, %d rows present, %d inserts returned errors", len(acked), rows, errs.Load())
	if missing > 0 {
		t.Errorf("%d acknowledged inserts are missing after the restart", missing)
	}
	if rows < len(acked) {
		t.Errorf("rows %d < acknowledged %d", rows, len(acked))
	}
}

// Tokens revoked server-side mid-run are recovered by the forced refresh: no
// worker sees an error.
func TestRevocationUnderLoad(t *testing.T) {
	e := lakebasetest.Start(t)
	_, db := open(t, config(t, e, nil))
	db.SetMaxIdleConns(0)
	ctx, cancel := context.WithCancel(t.Context())
	var (
		wg      sync.WaitGroup
		queries atomic.Int64
		failed  atomic.Int64
	)
	for w := 0; w < 8; w++ {
		wg.Go(func() {
			for ctx.Err() == nil {
				var one int
				if err := db.QueryRowContext(ctx, "SELECT 1").Scan(&one); err != nil && ctx.Err() == nil {
					failed.Add(1)
					t.Errorf("query failed after revocation: %v", err)
				}
				queries.Add(1)
			}
		})
	}
	eventually(t, "some queries", 10*time.Second, func() bool { return queries.Load() > 50 })
	e.RevokeRole(e.ServicePrincipal())
	n := queries.Load()
	eventually(t, "queries after the revocation", 10*time.Second, func() bool { return queries.Load() > n+100 })
	cancel()
	wg.Wait()
	if failed.Load() > 0 {
		t.Errorf("%d queries failed", failed.Load())
	}
}

// Close while fetches and connects are in flight returns promptly and every
// caller gets an answer.
func TestCloseDuringInflightFetches(t *testing.T) {
	e := lakebasetest.Start(t)
	cfg := config(t, e, nil)
	cfg.Token.Mode = tokensource.Lazy
	cfg.Token.AttemptTimeout = time.Minute
	c, err := connector.New(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.SetLatency(lakebasetest.RouteCredentials, time.Minute)
	defer e.SetLatency(lakebasetest.RouteCredentials, 0)
	var wg sync.WaitGroup
	errs := make(chan error, 10)
	for i := 0; i < 10; i++ {
		wg.Go(func() {
			_, err := c.Connect(t.Context())
			errs <- err
		})
	}
	eventually(t, "the fetch to be in flight", 10*time.Second, func() bool { return e.Calls(lakebasetest.RouteCredentials) >= 1 })
	start := time.Now()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("callers still blocked 10 s after Close")
	}
	t.Logf("all callers returned %v after Close", time.Since(start).Round(time.Millisecond))
	close(errs)
	for err := range errs {
		if err == nil {
			t.Error("a Connect succeeded although the fetch never finished")
		}
	}
}

// The credential API dropping connections (a network failure, not an HTTP
// error) during the refresh window costs new connections nothing, and the
// failures are classified transient.
func TestNetworkFailureInsideRefreshWindow(t *testing.T) {
	e := lakebasetest.Start(t, lakebasetest.WithMinTTL(time.Second), lakebasetest.WithTTL(6*time.Second))
	logs := newCapture(t)
	cfg := config(t, e, logs.logger())
	cfg.Token.EarlyRefresh = 4 * time.Second
	c, _ := open(t, cfg)
	if _, err := c.TokenSource().Token(t.Context()); err != nil {
		t.Fatal(err)
	}
	base := e.Calls(lakebasetest.RouteCredentials)
	e.SetFault(lakebasetest.RouteCredentials, lakebasetest.FaultDropConnection)
	var failed int
	for e.Calls(lakebasetest.RouteCredentials) < base+3 { // the refresh keeps failing
		if f, err := newConnections(t.Context(), c, 1); f > 0 {
			failed++
			t.Errorf("new connection failed while the API dropped connections: %v", err)
		}
	}
	e.SetFault(lakebasetest.RouteCredentials, lakebasetest.FaultNone)
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		if f, err := newConnections(t.Context(), c, 1); f > 0 {
			failed++
			t.Errorf("new connection failed after the API recovered: %v", err)
		}
	}
	if !strings.Contains(logs.text(), "transient=true") {
		t.Errorf("dropped connections were not logged as transient failures:\n%s", logs.text())
	}
	t.Logf("%d credential calls while dropping connections and after; %d failed new connections", e.Calls(lakebasetest.RouteCredentials)-base, failed)
}

// The independent check of issue 19: 8 workers on new connections, every
// token of the role revoked, then revoked again inside
// ForcedRefreshInterval. The first revocation is recovered by one forced
// refresh; the second is deferred to the end of the interval, never
// dropped: workers fail only until then, and recover without waiting for
// the token's refresh point.
func TestRevokedTwiceUnderLoad(t *testing.T) {
	const interval = 3 * time.Second
	e := lakebasetest.Start(t)
	cfg := config(t, e, nil)
	cfg.ForcedRefreshInterval = interval
	_, db := open(t, cfg)
	db.SetMaxIdleConns(0)
	ctx, cancel := context.WithCancel(t.Context())
	var (
		wg       sync.WaitGroup
		ok, bad  atomic.Int64
		lastFail atomic.Int64 // unix nanoseconds of the last failed query
	)
	for w := 0; w < 8; w++ {
		wg.Go(func() {
			for ctx.Err() == nil {
				var one int
				if err := db.QueryRowContext(ctx, "SELECT 1").Scan(&one); err != nil {
					if ctx.Err() == nil {
						bad.Add(1)
						lastFail.Store(time.Now().UnixNano())
					}
					continue
				}
				ok.Add(1)
			}
		})
	}
	defer func() { cancel(); wg.Wait() }()
	eventually(t, "some queries", 10*time.Second, func() bool { return ok.Load() > 50 })
	calls := e.Calls(lakebasetest.RouteCredentials)

	e.RevokeRole(e.ServicePrincipal())
	n := ok.Load()
	eventually(t, "recovery from the first revocation", 10*time.Second, func() bool { return ok.Load() > n+50 })
	first := bad.Load()
	rejects := e.Rejects(e.ServicePrincipal())
	second := time.Now() // inside the interval of the forced refresh above
	e.RevokeRole(e.ServicePrincipal())
	eventually(t, "a refused query after the second revocation", 5*time.Second, func() bool { return bad.Load() > first })
	n = ok.Load()
	eventually(t, "recovery from the second revocation", 2*interval, func() bool { return ok.Load() > n+50 })
	recovered := time.Since(second)
	cancel()
	wg.Wait()
	got := e.Calls(lakebasetest.RouteCredentials) - calls
	t.Logf("first revocation: %d failed queries; second (inside the %v interval): %d failed queries (%d logins refused by the server), recovered after %v; %d credential calls",
		first, interval, bad.Load()-first, e.Rejects(e.ServicePrincipal())-rejects, recovered.Round(time.Millisecond), got)
	if ended := time.Unix(0, lastFail.Load()).Sub(second); ended > interval+time.Second {
		t.Errorf("queries still failed %v after the second revocation, want the deferral to end with the %v interval", ended, interval)
	}
	if got > 3 {
		t.Errorf("credential calls = %d for two revocations, want at most 3", got)
	}
}
