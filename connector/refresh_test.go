package connector

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/lakebase-go/lakebase/lakebasetest"
	"github.com/lakebase-go/lakebase/tokensource"
)

// testInterval is the ForcedRefreshInterval of the recovery tests: short,
// so they run in seconds, and long against one login under -race on a
// loaded machine.
const testInterval = 2 * time.Second

// modes runs f once per refresh mode.
func modes(t *testing.T, f func(t *testing.T, mode tokensource.Mode)) {
	for _, m := range []tokensource.Mode{tokensource.Lazy, tokensource.Eager} {
		t.Run(m.String(), func(t *testing.T) { f(t, m) })
	}
}

// recoveryConfig is a connector configuration with a short forced-refresh
// interval and a fast background retry.
func recoveryConfig(t *testing.T, e *lakebasetest.Emulator, mode tokensource.Mode) Config {
	cfg := baseConfig(t, e, nil)
	cfg.ForcedRefreshInterval = testInterval
	cfg.Token.Mode = mode
	cfg.Token.BackgroundRetryMin = 200 * time.Millisecond
	cfg.Token.BackgroundRetryMax = time.Second
	return cfg
}

// connectOnce opens and closes one new physical connection.
func connectOnce(ctx context.Context, c *Connector) error {
	conn, err := c.Connect(ctx)
	if err == nil {
		_ = conn.Close()
	}
	return err
}

// pollUntil calls attempt every 25 ms until it succeeds or d passes (a
// polling loop with a deadline, not a sleep used as synchronisation). It
// returns the failed attempts' errors, and when the success came.
func pollUntil(t *testing.T, d time.Duration, attempt func() error) (errs []error, ok time.Time) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := attempt()
		if err == nil {
			return errs, time.Now()
		}
		errs = append(errs, err)
		if time.Now().After(deadline) {
			return errs, time.Time{}
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// TestFailedForcedRefreshRecovers: a revoked token whose forced refresh
// fails once (HTTP 500) recovers on a later connection within
// 2 × ForcedRefreshInterval with at most 3 credential calls, in both modes;
// the connections refused meanwhile carry the refresh failure.
func TestFailedForcedRefreshRecovers(t *testing.T) {
	modes(t, func(t *testing.T, mode tokensource.Mode) {
		e := lakebasetest.Start(t)
		c := mustNew(t, recoveryConfig(t, e, mode))
		if err := connectOnce(t.Context(), c); err != nil {
			t.Fatal(err)
		}
		calls := e.Calls(lakebasetest.RouteCredentials)
		e.RevokeRole(e.ServicePrincipal())
		e.FailNext(lakebasetest.RouteCredentials, 1, 500, "INTERNAL_ERROR")
		start := time.Now()
		errs, ok := pollUntil(t, 3*testInterval, func() error { return connectOnce(t.Context(), c) })
		got := e.Calls(lakebasetest.RouteCredentials) - calls
		if ok.IsZero() {
			t.Fatalf("no recovery within %v; last error: %v", 3*testInterval, errs[len(errs)-1])
		}
		t.Logf("%s: recovered after %v, %d refused connections, %d credential calls",
			mode, ok.Sub(start).Round(time.Millisecond), len(errs), got)
		if took := ok.Sub(start); took > 2*testInterval {
			t.Errorf("recovered after %v, want within 2 × ForcedRefreshInterval (%v)", took, 2*testInterval)
		}
		if got > 3 {
			t.Errorf("credential calls = %d, want at most 3", got)
		}
		if len(errs) == 0 {
			t.Fatal("no connection was refused: the fault was not injected")
		}
		first := errs[0]
		var le *LoginError
		var te *tokensource.Error
		switch {
		case !errors.As(first, &le) || le.Reason != LoginCredentialRefused:
			t.Errorf("first error: want a LoginError (credential refused), got %v", first)
		case !errors.As(first, &te) || !te.Transient() || !tokensource.IsTransient(first):
			t.Errorf("first error does not carry the transient refresh failure: %v", first)
		case !strings.Contains(first.Error(), "refresh failed"):
			t.Errorf("first error does not say that the refresh failed: %v", first)
		}
	})
}

// TestRevokedTwiceInsideInterval: a second revocation inside
// ForcedRefreshInterval is deferred, not dropped: the first connection that
// starts after the interval forces the refresh and succeeds.
func TestRevokedTwiceInsideInterval(t *testing.T) {
	modes(t, func(t *testing.T, mode tokensource.Mode) {
		e := lakebasetest.Start(t)
		c := mustNew(t, recoveryConfig(t, e, mode))
		if err := connectOnce(t.Context(), c); err != nil {
			t.Fatal(err)
		}
		calls := e.Calls(lakebasetest.RouteCredentials)
		e.RevokeRole(e.ServicePrincipal())
		if err := connectOnce(t.Context(), c); err != nil {
			t.Fatalf("first revocation: %v", err)
		}
		forced := time.Now() // the forced refresh happened before this
		e.RevokeRole(e.ServicePrincipal())
		var refused int
		for {
			started := time.Now()
			err := connectOnce(t.Context(), c)
			if !started.Before(forced.Add(testInterval)) {
				// The first connection after the interval forces the refresh.
				if err != nil {
					t.Fatalf("the first connection after the interval failed: %v", err)
				}
				break
			}
			if err == nil {
				break // the refresh came early: allowed, nothing was dropped
			}
			refused++
			var le *LoginError
			if !errors.As(err, &le) || le.Reason != LoginCredentialRefused {
				t.Fatalf("inside the interval: want a LoginError (credential refused), got %v", err)
			}
			if refused == 1 && !strings.Contains(err.Error(), "ForcedRefreshInterval") {
				t.Errorf("a deferred refusal does not say when it is retried: %v", err)
			}
			time.Sleep(25 * time.Millisecond)
		}
		got := e.Calls(lakebasetest.RouteCredentials) - calls
		t.Logf("%s: %d connections refused inside the interval; %d credential calls for two revocations", mode, refused, got)
		if got > 3 {
			t.Errorf("credential calls = %d, want at most 3", got)
		}
		if err := connectOnce(t.Context(), c); err != nil {
			t.Errorf("after recovery: %v", err)
		}
	})
}

// TestPgxPoolFailedForcedRefreshRecovers: the pgxpool path recovers from a
// revoked token whose forced refresh fails once, in both modes.
func TestPgxPoolFailedForcedRefreshRecovers(t *testing.T) {
	modes(t, func(t *testing.T, mode tokensource.Mode) {
		e := lakebasetest.Start(t)
		c := mustNew(t, recoveryConfig(t, e, mode))
		pc, err := c.PoolConfig()
		if err != nil {
			t.Fatal(err)
		}
		pc.AfterRelease = func(*pgx.Conn) bool { return false } // every Acquire logs in anew
		pool, err := pgxpool.NewWithConfig(t.Context(), pc)
		if err != nil {
			t.Fatal(err)
		}
		defer pool.Close()
		if err := pool.Ping(t.Context()); err != nil {
			t.Fatal(err)
		}
		calls := e.Calls(lakebasetest.RouteCredentials)
		e.RevokeRole(e.ServicePrincipal())
		e.FailNext(lakebasetest.RouteCredentials, 1, 500, "INTERNAL_ERROR")
		start := time.Now()
		errs, ok := pollUntil(t, 3*testInterval, func() error { return pool.Ping(t.Context()) })
		got := e.Calls(lakebasetest.RouteCredentials) - calls
		if ok.IsZero() {
			t.Fatalf("no recovery within %v; last error: %v", 3*testInterval, errs[len(errs)-1])
		}
		t.Logf("%s: recovered after %v, %d failed pings, %d credential calls", mode, ok.Sub(start).Round(time.Millisecond), len(errs), got)
		if took := ok.Sub(start); took > 2*testInterval {
			t.Errorf("recovered after %v, want within 2 × ForcedRefreshInterval (%v)", took, 2*testInterval)
		}
		if got > 3 {
			t.Errorf("credential calls = %d, want at most 3", got)
		}
	})
}
