package reliability

import (
	"context"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lakebase-go/lakebase/lakebasetest"
)

// soakDuration is 60 s by default (CI); LAKEBASE_SOAK overrides it.
func soakDuration(t *testing.T) time.Duration {
	if v := os.Getenv("LAKEBASE_SOAK"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("LAKEBASE_SOAK: %v", err)
		}
		return d
	}
	if testing.Short() {
		t.Skip("soak test skipped with -short")
	}
	return 60 * time.Second
}

// 64 workers run mixed queries with 3-second tokens across at least ten
// rotations: no errors, about one credential call per rotation, and
// goroutines and connections back to where they were.
func TestSoak(t *testing.T) {
	d := soakDuration(t)
	e := lakebasetest.Start(t, lakebasetest.WithMinTTL(time.Second), lakebasetest.WithTTL(3*time.Second))
	if err := e.AdminExec(t.Context(), "CREATE TABLE soak (id bigserial PRIMARY KEY, worker int, payload text)"); err != nil {
		t.Fatal(err)
	}
	if err := e.AdminExec(t.Context(), fmt.Sprintf(`GRANT ALL ON soak TO "%[1]s"; GRANT USAGE ON SEQUENCE soak_id_seq TO "%[1]s"`, e.ServicePrincipal())); err != nil {
		t.Fatal(err)
	}
	_, db := open(t, config(t, e, nil))
	db.SetMaxOpenConns(32)
	db.SetMaxIdleConns(8)
	db.SetConnMaxLifetime(400 * time.Millisecond) // keep opening new physical connections
	before := settledGoroutines()
	e.ResetCalls()

	ctx, cancel := context.WithTimeout(t.Context(), d)
	defer cancel()
	var (
		wg      sync.WaitGroup
		ops     atomic.Int64
		errs    atomic.Int64
		firstMu sync.Mutex
		first   error
	)
	fail := func(err error) {
		errs.Add(1)
		firstMu.Lock()
		if first == nil {
			first = err
		}
		firstMu.Unlock()
	}
	for w := 0; w < 64; w++ {
		wg.Go(func() {
			for i := 0; ctx.Err() == nil; i++ {
				var err error
				switch i % 4 {
				case 0:
					var one int
					err = db.QueryRowContext(ctx, "SELECT 1").Scan(&one)
				case 1:
					var id int64
					err = db.QueryRowContext(ctx, "INSERT INTO soak (worker, payload) VALUES ($1, $2) RETURNING id", w, "x").Scan(&id)
				case 2:
					var n int
					err = db.QueryRowContext(ctx, "SELECT count(*) FROM soak WHERE worker = $1", w).Scan(&n)
				case 3:
					var tx interface {
						Commit() error
						Rollback() error
					}
					t, terr := db.BeginTx(ctx, nil)
					if terr == nil {
						tx = t
						_, err = t.ExecContext(ctx, "UPDATE soak SET payload = 'y' WHERE id = (SELECT max(id) FROM soak WHERE worker = $1)", w)
						if err == nil {
							err = tx.Commit()
						} else {
							_ = tx.Rollback()
						}
					} else {
						err = terr
					}
				}
				if err != nil && ctx.Err() == nil {
					fail(err)
				}
				ops.Add(1)
			}
		})
	}
	wg.Wait()
	calls := e.Calls(lakebasetest.RouteCredentials)
	logins := e.Logins(e.ServicePrincipal())
	stats := db.Stats()
	_ = db.Close()
	after := settledGoroutines()
	// Rotations expected: a 3 s token is refreshed max(1 s, 0.75 s) before
	// expiry, so every ~2 s.
	expected := int64(d / (2 * time.Second))
	t.Logf("soak %v: %d operations, %d errors, %d credential calls (expected about %d rotations), %d logins, open connections at end %d, goroutines %d -> %d",
		d, ops.Load(), errs.Load(), calls, expected, logins, stats.OpenConnections, before, after)
	if errs.Load() > 0 {
		t.Errorf("%d errors, first: %v", errs.Load(), first)
	}
	if calls < 10 {
		t.Errorf("only %d credential calls: fewer than 10 rotations", calls)
	}
	if calls > expected*2+2 {
		t.Errorf("%d credential calls for about %d rotations", calls, expected)
	}
	if stats.OpenConnections > 32 {
		t.Errorf("open connections %d > MaxOpenConns 32", stats.OpenConnections)
	}
	if after > before+10 {
		t.Errorf("goroutines grew from %d to %d", before, after)
	}
}
