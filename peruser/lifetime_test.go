package peruser_test

import (
	"context"
	"database/sql"
	"log/slog"
	"net/http"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/lakebase-go/lakebase/connector"
	"github.com/lakebase-go/lakebase/internal/clocktest"
	"github.com/lakebase-go/lakebase/lakebasetest"
	"github.com/lakebase-go/lakebase/peruser"
)

// TestEnvOnlyConfigServesUsers: with the whole configuration in the
// environment (LAKEBASE_INSTANCE, then LAKEBASE_ENDPOINT without PGHOST, so
// the service principal looks the host up), users get pools derived from
// the service principal's resolved configuration, with no look-up of their
// own.
func TestEnvOnlyConfigServesUsers(t *testing.T) {
	for _, kind := range []string{"instance", "endpoint"} {
		t.Run(kind, func(t *testing.T) {
			e := lakebasetest.Start(t)
			ctx := t.Context()
			for k, v := range e.Env() {
				t.Setenv(k, v)
			}
			hostRoute := lakebasetest.RouteInstance
			if kind == "instance" {
				t.Setenv(connector.EnvEndpoint, "")
				t.Setenv(connector.EnvInstance, e.Instance())
			} else {
				t.Setenv(connector.EnvHost, "")
				hostRoute = lakebasetest.RouteEndpoint
			}
			for _, k := range []string{"DATABRICKS_CLIENT_ID", "DATABRICKS_CLIENT_SECRET", "DATABRICKS_CONFIG_PROFILE", "DATABRICKS_AUTH_TYPE"} {
				t.Setenv(k, "")
			}
			t.Setenv("DATABRICKS_CONFIG_FILE", t.TempDir()+"/none")
			m := newManager(t, peruser.Config{})
			hostCalls := e.Calls(hostRoute)
			for _, email := range []string{"ann@example.com", "ben@example.com"} {
				tok, err := e.AddUser(ctx, email)
				if err != nil {
					t.Fatal(err)
				}
				db, release, err := m.ForRequest(req(email, tok))
				if err != nil {
					t.Fatal(err)
				}
				var who string
				err = db.QueryRowContext(ctx, "SELECT current_user").Scan(&who)
				release()
				if err != nil || who != email {
					t.Fatalf("%s's pool: %q, %v", email, who, err)
				}
			}
			if got := e.Calls(hostRoute); got != hostCalls {
				t.Errorf("%d host look-ups for users, want none", got-hostCalls)
			}
			if kind == "instance" && e.Calls(lakebasetest.RouteInstanceCredentials) < 2 {
				t.Error("users did not mint instance credentials")
			}
		})
	}
}

// TestMaxUsersOneNeverClosesALeasedPool: with MaxUsers 1 and two users
// holding their pools, neither pool is closed; the cap applies once one is
// released.
func TestMaxUsersOneNeverClosesALeasedPool(t *testing.T) {
	e := lakebasetest.Start(t)
	ctx := t.Context()
	toks := map[string]string{}
	for _, email := range []string{"a@example.com", "b@example.com", "c@example.com"} {
		tok, err := e.AddUser(ctx, email)
		if err != nil {
			t.Fatal(err)
		}
		toks[email] = tok
	}
	m := newManager(t, peruser.Config{Base: base(t, e, nil), MaxUsers: 1})
	adb, releaseA, err := m.ForRequest(req("a@example.com", toks["a@example.com"]))
	if err != nil {
		t.Fatal(err)
	}
	bdb, releaseB, err := m.ForRequest(req("b@example.com", toks["b@example.com"]))
	if err != nil {
		t.Fatal(err)
	}
	for i, db := range []*sql.DB{adb, bdb} {
		if err := db.PingContext(ctx); err != nil {
			t.Fatalf("leased pool %d after the cap was exceeded: %v", i, err)
		}
	}
	if st := m.Stats(); st.OpenPools != 2 || st.Evicted != 0 {
		t.Errorf("stats %+v, want both leased pools open", st)
	}
	releaseA()
	releaseA() // idempotent
	cdb, releaseC, err := m.ForRequest(req("c@example.com", toks["c@example.com"]))
	if err != nil {
		t.Fatal(err)
	}
	defer releaseC()
	if err := bdb.PingContext(ctx); err != nil {
		t.Fatalf("b's leased pool was closed: %v", err)
	}
	if err := cdb.PingContext(ctx); err != nil {
		t.Fatal(err)
	}
	if err := adb.PingContext(ctx); err == nil {
		t.Error("a's released pool is still open beyond the cap")
	}
	releaseB()
	if st := m.Stats(); st.Evicted != 1 || st.OpenPools != 2 {
		t.Errorf("stats %+v, want a evicted, b and c open", st)
	}
}

// TestNewTokenClearsRememberedFailure: a mint failure of an open pool is
// remembered for the old access token only.
func TestNewTokenClearsRememberedFailure(t *testing.T) {
	e := lakebasetest.Start(t)
	ctx := t.Context()
	tokA, err := e.AddUser(ctx, "hal@example.com")
	if err != nil {
		t.Fatal(err)
	}
	tokB := e.AddIdentityWithoutRole("hal@example.com") // the same user's next token
	cfg := base(t, e, nil)
	cfg.Token.BackgroundRetryMin = time.Hour // a failure is remembered for long
	clk := clocktest.New(time.Now())
	m := newManager(t, peruser.WithClock(peruser.Config{Base: cfg, IdleTTL: 24 * time.Hour}, clk))
	db, release, err := m.ForRequest(req("hal@example.com", tokA))
	if err != nil {
		t.Fatal(err)
	}
	// Every ping logs in; the pool's first credential (1 h) expires, so
	// the next login mints, and that mint fails. Credentials minted from
	// now on outlive the clock's jump.
	db.SetMaxIdleConns(0)
	e.SetTTL(3 * time.Hour)
	clk.Advance(time.Hour)
	e.FailNext(lakebasetest.RouteCredentials, 1, http.StatusForbidden, "PERMISSION_DENIED")
	if err := db.PingContext(ctx); err == nil {
		t.Fatal("the injected mint failure did not surface")
	}
	mints := e.Calls(lakebasetest.RouteCredentials)
	if err := db.PingContext(ctx); err == nil || e.Calls(lakebasetest.RouteCredentials) != mints {
		t.Fatalf("the failure was not remembered for the old token: %v", err)
	}
	release()
	db2, release, err := m.ForRequest(req("hal@example.com", tokB))
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	if db2 != db {
		t.Fatal("the pool was rebuilt")
	}
	if err := db2.PingContext(ctx); err != nil {
		t.Fatalf("the new token still gets the old token's failure: %v", err)
	}
	if e.MintsBy(tokB) != 1 {
		t.Errorf("mints with the new token: %d", e.MintsBy(tokB))
	}
}

// TestJanitorHasOneTimerChain: Sweep calls racing the janitor's own pass
// never start a second timer chain, and Close stops the one there is.
func TestJanitorHasOneTimerChain(t *testing.T) {
	e := lakebasetest.Start(t)
	clk := clocktest.New(time.Now())
	m, err := peruser.New(t.Context(), peruser.WithClock(peruser.Config{Base: base(t, e, nil), IdleTTL: time.Minute}, clk))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	// The service principal's token source may hold a timer of its own on
	// the system clock, not on clk: clk holds only the janitor.
	if !clk.BlockUntil(ctx, 1) || clk.Pending() != 1 {
		t.Fatalf("pending timers after New: %d, want 1", clk.Pending())
	}
	for range 50 {
		var wg sync.WaitGroup
		for range 3 {
			wg.Go(m.Sweep)
		}
		clk.Advance(30 * time.Second) // fires the janitor
		wg.Wait()
		if !clk.BlockUntil(ctx, 1) {
			t.Fatal("the janitor did not re-arm")
		}
		if n := clk.Pending(); n != 1 {
			t.Fatalf("pending janitor timers %d, want 1", n)
		}
	}
	_ = m.Close()
	if n := clk.Pending(); n != 0 {
		t.Errorf("pending timers after Close: %d", n)
	}
}

// TestChurnThroughMaxUsers: many distinct users through MaxUsers 100 leave
// goroutines and heap flat. Every user is verified, gets a real pool
// (connector, token source, sql.DB) and logs in once (the pool's first
// connection). 1,500 users without -race and without -short; under
// either, 300.
func TestChurnThroughMaxUsers(t *testing.T) {
	users := 1500
	if raceEnabled || testing.Short() {
		users = 300
	}
	e := lakebasetest.Start(t)
	cfg := base(t, e, nil)
	cfg.Logger = slog.New(slog.DiscardHandler)
	m := newManager(t, peruser.Config{Base: cfg, MaxUsers: 100, MaxVerifiedTokens: 500})
	snapshot := func() (int, uint64) {
		runtime.GC()
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return runtime.NumGoroutine(), ms.HeapAlloc
	}
	// The emulator runs in this process: create every identity first, so
	// its maps do not count as growth.
	emails := make([]string, users)
	for i := range emails {
		emails[i] = "churn" + strconv.Itoa(i) + "@example.com"
	}
	toks := addUsers(t, e, emails...)
	var g0 int
	var h0 uint64
	var mints0 int64
	maxOpen := 0
	for i, tok := range toks {
		_, release, err := m.ForRequest(req(emails[i], tok))
		if err != nil {
			t.Fatal(err)
		}
		release()
		maxOpen = max(maxOpen, m.Stats().OpenPools)
		if i == max(users/5, 150) { // past MaxUsers: the pools are at their cap
			g0, h0 = snapshot()
			mints0 = e.Calls(lakebasetest.RouteCredentials)
		}
	}
	g1, h1 := snapshot()
	st := m.Stats()
	t.Logf("%d users, MaxUsers 100: max open %d, created %d, evicted %d; goroutines %d -> %d, heap %.1f -> %.1f MiB",
		users, maxOpen, st.Created, st.Evicted, g0, g1, float64(h0)/(1<<20), float64(h1)/(1<<20))
	if maxOpen > 100 {
		t.Errorf("open pools reached %d", maxOpen)
	}
	if st.Created != int64(users) || st.Evicted != int64(users-100) {
		t.Errorf("stats %+v", st)
	}
	if g1 > g0+10 {
		t.Errorf("goroutines grew from %d to %d", g0, g1)
	}
	// The emulator runs in this process and keeps every credential it
	// mints (DefaultTokenSize bytes and its bookkeeping): that growth is
	// the emulator's, not the Manager's.
	emu := uint64(e.Calls(lakebasetest.RouteCredentials)-mints0) * (lakebasetest.DefaultTokenSize + 512)
	if limit := h0 + 1<<20 + emu; h1 > limit {
		t.Errorf("heap grew from %.1f to %.1f MiB (%.1f MiB of it allowed for the emulator's credentials)", float64(h0)/(1<<20), float64(h1)/(1<<20), float64(emu)/(1<<20))
	}
}
