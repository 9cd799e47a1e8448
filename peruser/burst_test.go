package peruser_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"strings"
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

// junkBurst sends 2 × tokens requests, each junk token twice in a
// shuffled order, from workers goroutines, while a real user whose token is
// remembered keeps making requests (SELECT 1 on their pool). The real
// user's median is also measured alone, before and after.
//
// viaHTTP sends every request through Middleware over loopback HTTP; the
// load generator, the server and the emulator's workspace then share the
// machine's cores, so the burst saturates them and every request queues
// for the CPU. Otherwise requests call Acquire directly, and each junk
// goroutine yields after each request, as a handler goroutine that waits
// for its connection's next request does: what remains is this package's
// own cost and contention.
//
// With noop (HTTP only), the burst's requests go to a handler outside
// Middleware that answers 403 at once: the baseline of what a burst of
// that many HTTP requests costs the real user on this machine.
func junkBurst(tb testing.TB, e *lakebasetest.Emulator, m *peruser.Manager, realEmail, realTok string, tokens, workers int, seed uint64, viaHTTP, noop bool) burstResult {
	tb.Helper()
	send := func(email, tok string) (int, time.Duration, error) {
		start := time.Now()
		db, release, err := m.Acquire(context.Background(), peruser.Identity{Email: email, AccessToken: tok})
		if err != nil {
			return peruser.StatusCode(err), time.Since(start), nil
		}
		defer release()
		var one int
		if err := db.QueryRow("SELECT 1").Scan(&one); err != nil {
			return 0, 0, err
		}
		return http.StatusOK, time.Since(start), nil
	}
	if viaHTTP {
		mux := http.NewServeMux()
		mux.Handle("/", m.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			db, _, _ := peruser.DBFromContext(r.Context())
			var one int
			if err := db.QueryRowContext(r.Context(), "SELECT 1").Scan(&one); err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
			}
		})))
		mux.HandleFunc("/noop", func(w http.ResponseWriter, r *http.Request) { http.Error(w, "noop", http.StatusForbidden) })
		srv := httptest.NewServer(mux)
		defer srv.Close()
		tr := &http.Transport{MaxIdleConnsPerHost: workers + 1}
		defer tr.CloseIdleConnections()
		client := &http.Client{Transport: tr}
		send = func(email, tok string) (int, time.Duration, error) {
			url := srv.URL
			if noop && email != realEmail {
				url += "/noop"
			}
			r, err := http.NewRequest(http.MethodGet, url, nil)
			if err != nil {
				return 0, 0, err
			}
			r.Header.Set(peruser.HeaderEmail, email)
			r.Header.Set(peruser.HeaderAccessToken, tok)
			start := time.Now()
			resp, err := client.Do(r)
			if err != nil {
				return 0, 0, err
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
			return resp.StatusCode, time.Since(start), nil
		}
	}
	realReq := func() (time.Duration, error) {
		code, d, err := send(realEmail, realTok)
		if err == nil && code != http.StatusOK {
			err = fmt.Errorf("status %d", code)
		}
		return d, err
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
				code, _, err := send("victim@example.com", tok)
				mu.Lock()
				switch {
				case err != nil:
					res.other = append(res.other, err)
				case code == http.StatusForbidden:
					res.forbidden++
				case code == http.StatusServiceUnavailable:
					res.busy++
				default:
					res.other = append(res.other, fmt.Errorf("a junk token was answered %d", code))
				}
				mu.Unlock()
				if !viaHTTP {
					runtime.Gosched()
				}
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
			r := junkBurst(t, e, m, "rita@example.com", rita, tokens, workers, 1, false, false)
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
// user's median request during the burst to its median alone (target: at
// most 2), with requests calling Acquire directly and through Middleware
// over HTTP (see junkBurst). http/noop is the same burst sent to a handler
// outside Middleware that answers at once: what 2,000 HTTP requests from 64
// goroutines cost the real user on this machine without this package.
func BenchmarkJunkBurst(b *testing.B) {
	const tokens, workers = 1000, 64
	for _, kind := range []string{"direct/cap=8", "direct/cap=64", "http/cap=8", "http/cap=64", "http/noop"} {
		b.Run(kind, func(b *testing.B) {
			capN := 64
			if strings.HasSuffix(kind, "cap=8") {
				capN = 8
			}
			e, m, rita := burstManager(b, capN, 2*time.Millisecond)
			var me, peak, busy, ratio float64
			i := 0
			for b.Loop() {
				i++
				r := junkBurst(b, e, m, "rita@example.com", rita, tokens, workers, uint64(i), strings.HasPrefix(kind, "http"), kind == "http/noop")
				if len(r.realErrs) > 0 || len(r.other) > 0 {
					b.Fatalf("real user errors %v, burst answers %v", r.realErrs, r.other)
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
