package peruser_test

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lakebase-go/lakebase/lakebasetest"
	"github.com/lakebase-go/lakebase/peruser"
)

// burstResult is what one junk burst cost and did.
type burstResult struct {
	meCalls, peak   int64         // Me calls made; most Me calls in flight at once (the emulator's count)
	forbidden, busy int           // junk requests answered 403, 503
	other           []error       // junk requests answered otherwise
	normal, during  time.Duration // median of a real user's request before and during the burst
	duringN         int           // the real user's requests during the burst
	realErrs        []error
	elapsed         time.Duration
}

// junkBurst sends requests = 2 × tokens requests, each junk token twice in
// a shuffled order, from workers goroutines, while a real user whose token
// is remembered keeps making requests (Acquire, SELECT 1, release). The
// real user's median is also measured alone, before and after.
func junkBurst(tb testing.TB, e *lakebasetest.Emulator, m *peruser.Manager, realEmail, realTok string, tokens, workers int, seed uint64) burstResult {
	tb.Helper()
	ctx := context.Background()
	realReq := func() (time.Duration, error) {
		start := time.Now()
		db, release, err := m.Acquire(ctx, peruser.Identity{Email: realEmail, AccessToken: realTok})
		if err != nil {
			return 0, err
		}
		defer release()
		var one int
		err = db.QueryRowContext(ctx, "SELECT 1").Scan(&one)
		return time.Since(start), err
	}
	var res burstResult
	var normal []time.Duration
	alone := func() {
		for range 150 {
			d, err := realReq()
			if err != nil {
				tb.Fatal(err)
			}
			normal = append(normal, d)
		}
	}
	alone()

	work := make([]string, 0, 2*tokens)
	for i := range tokens {
		tok := fmt.Sprintf("dapi-junk-%d-%d", seed, i)
		work = append(work, tok, tok)
	}
	rand.New(rand.NewPCG(seed, 24)).Shuffle(len(work), func(i, j int) { work[i], work[j] = work[j], work[i] })
	queue := make(chan string, len(work))
	for _, tok := range work {
		queue <- tok
	}
	close(queue)

	meBefore := e.Calls(lakebasetest.RouteMe)
	e.ResetInFlightPeak()
	var mu sync.Mutex
	var running atomic.Bool
	running.Store(true)
	realDone := make(chan []time.Duration)
	go func() {
		var during []time.Duration
		for running.Load() {
			d, err := realReq()
			if err != nil {
				mu.Lock()
				res.realErrs = append(res.realErrs, err)
				mu.Unlock()
				continue
			}
			during = append(during, d)
		}
		realDone <- during
	}()
	start := time.Now()
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for tok := range queue {
				_, release, err := m.Acquire(ctx, peruser.Identity{Email: "victim@example.com", AccessToken: tok})
				mu.Lock()
				switch peruser.StatusCode(err) {
				case http.StatusForbidden:
					res.forbidden++
				case http.StatusServiceUnavailable:
					res.busy++
				default:
					if err == nil {
						release()
						err = fmt.Errorf("a junk token was served")
					}
					res.other = append(res.other, err)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	res.elapsed = time.Since(start)
	running.Store(false)
	during := <-realDone
	res.during, res.duringN = median(during), len(during)
	res.meCalls = e.Calls(lakebasetest.RouteMe) - meBefore
	res.peak = e.InFlightPeak(lakebasetest.RouteMe)
	alone() // the real user alone again, after the burst
	res.normal = median(normal)
	return res
}

func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

// burstManager is a Manager with MaxVerifications capN, quiet logs, Me
// answering after meLatency, and a real user whose pool is open and whose
// token is remembered.
func burstManager(tb testing.TB, capN int, meLatency time.Duration) (*lakebasetest.Emulator, *peruser.Manager, string) {
	tb.Helper()
	e := lakebasetest.Start(tb)
	cfg := base(tb, e, nil)
	cfg.Logger = slog.New(slog.DiscardHandler) // a WARN per junk token
	m, err := peruser.New(tb.Context(), peruser.Config{Base: cfg, MaxVerifications: capN})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = m.Close() })
	tok, err := e.AddUser(tb.Context(), "rita@example.com")
	if err != nil {
		tb.Fatal(err)
	}
	_, release, err := m.Acquire(tb.Context(), peruser.Identity{Email: "rita@example.com", AccessToken: tok})
	if err != nil {
		tb.Fatal(err)
	}
	release()
	e.SetLatency(lakebasetest.RouteMe, meLatency)
	return e, m, tok
}

// TestJunkBurst: 2,000 requests with 1,000 distinct junk tokens (each
// twice) from 64 goroutines cost at most one Me call per token, never more
// Me calls in flight than MaxVerifications, and every junk request is
// refused (403, or 503 beyond the cap, without a workspace call); a real
// user keeps being served. With a cap of 8 most of the burst is shed; with
// a cap of 64 (one slot per goroutine) every token is verified once and
// its repeat is answered from memory or shares the verification. The real
// user's latency during the burst against alone is logged (a figure, not
// an assertion: see BenchmarkJunkBurst).
func TestJunkBurst(t *testing.T) {
	const tokens, workers = 1000, 64
	for _, capN := range []int{8, 64} {
		t.Run(fmt.Sprintf("cap=%d", capN), func(t *testing.T) {
			e, m, rita := burstManager(t, capN, 2*time.Millisecond)
			r := junkBurst(t, e, m, "rita@example.com", rita, tokens, workers, 1)
			st := m.Stats()
			t.Logf("%d requests, %d junk tokens, %d goroutines, MaxVerifications %d, Me latency 2ms: %v; Me calls %d, Me in flight at most %d; 403 %d, 503 %d; real user: median %v alone, %v during the burst (%.2fx, %d requests)",
				2*tokens, tokens, workers, capN, r.elapsed.Round(time.Millisecond), r.meCalls, r.peak, r.forbidden, r.busy,
				r.normal.Round(time.Microsecond), r.during.Round(time.Microsecond), float64(r.during)/float64(r.normal), r.duringN)
			if r.meCalls > tokens {
				t.Errorf("%d Me calls for %d junk tokens", r.meCalls, tokens)
			}
			if r.peak > int64(capN) {
				t.Errorf("%d Me calls in flight at once, cap %d", r.peak, capN)
			}
			if r.forbidden+r.busy != 2*tokens || len(r.other) > 0 {
				t.Errorf("403 %d + 503 %d of %d; others: %v", r.forbidden, r.busy, 2*tokens, r.other)
			}
			if int64(r.busy) != st.Busy {
				t.Errorf("503s %d, Stats.Busy %d", r.busy, st.Busy)
			}
			if capN >= workers && (r.busy != 0 || r.meCalls != tokens) {
				t.Errorf("with a slot per goroutine: 503 %d, Me calls %d; want 0 and one per token (%d)", r.busy, r.meCalls, tokens)
			}
			if len(r.realErrs) > 0 || r.duringN == 0 {
				t.Errorf("the real user during the burst: %d requests, errors %v", r.duringN, r.realErrs)
			}
			if st.Verifying != 0 {
				t.Errorf("verifications still in flight after the burst: %d", st.Verifying)
			}
		})
	}
}

// BenchmarkJunkBurst reports, per burst of 2,000 requests with 1,000
// distinct junk tokens from 64 goroutines (Me answering in 2 ms): the Me
// calls, the most in flight at once, the 503s, and the ratio of a real
// user's median request during the burst to its median alone (the target
// is at most 2).
func BenchmarkJunkBurst(b *testing.B) {
	const tokens, workers = 1000, 64
	for _, capN := range []int{8, 64} {
		b.Run(fmt.Sprintf("cap=%d", capN), func(b *testing.B) {
			e, m, rita := burstManager(b, capN, 2*time.Millisecond)
			var me, peak, busy, ratio float64
			i := 0
			for b.Loop() {
				i++
				r := junkBurst(b, e, m, "rita@example.com", rita, tokens, workers, uint64(i))
				if len(r.realErrs) > 0 || len(r.other) > 0 {
					b.Fatalf("real user errors %v, junk answers %v", r.realErrs, r.other)
				}
				me += float64(r.meCalls)
				busy += float64(r.busy)
				peak = max(peak, float64(r.peak))
				ratio += float64(r.during) / float64(r.normal)
			}
			b.ReportMetric(me/float64(i), "me-calls/burst")
			b.ReportMetric(busy/float64(i), "503s/burst")
			b.ReportMetric(peak, "max-in-flight")
			b.ReportMetric(ratio/float64(i), "real-user-ratio")
		})
	}
}
