package tokensource_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/databricks/databricks-sdk-go/apierr"
	"go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.uber.org/goleak"

	"github.com/lakebase-go/lakebase/internal/clock"
	"github.com/lakebase-go/lakebase/internal/clocktest"
	"github.com/lakebase-go/lakebase/internal/leaktest"
	"github.com/lakebase-go/lakebase/tokensource"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, leaktest.Options()...) }

var t0 = time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)

// fetcher is a scriptable FetchFunc.
type fetcher struct {
	calls atomic.Int64
	mu    sync.Mutex
	fn    func(ctx context.Context, n int64) (tokensource.Token, error)
}

func (f *fetcher) fetch(ctx context.Context) (tokensource.Token, error) {
	n := f.calls.Add(1)
	f.mu.Lock()
	fn := f.fn
	f.mu.Unlock()
	return fn(ctx, n)
}

func (f *fetcher) set(fn func(ctx context.Context, n int64) (tokensource.Token, error)) {
	f.mu.Lock()
	f.fn = fn
	f.mu.Unlock()
}

// hourTokens mints "tok-N" valid for an hour from clk's now.
func hourTokens(clk clock.Clock) func(context.Context, int64) (tokensource.Token, error) {
	return func(_ context.Context, n int64) (tokensource.Token, error) {
		return tokensource.Token{Value: fmt.Sprintf("tok-%d", n), Expiry: clk.Now().Add(time.Hour)}, nil
	}
}

func apiErr(status int, code string) error {
	return &apierr.APIError{StatusCode: status, ErrorCode: code, Message: "injected"}
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

// noWait asserts that Token returns within a generous bound without
// blocking on a fetch (the fetches in these tests block until released).
func noWait(t *testing.T, c *tokensource.Cached) tokensource.Token {
	t.Helper()
	type res struct {
		tok tokensource.Token
		err error
	}
	ch := make(chan res, 1)
	go func() { tok, err := c.Token(context.Background()); ch <- res{tok, err} }()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatalf("Token: %v", r.err)
		}
		return r.tok
	case <-time.After(5 * time.Second):
		t.Fatal("Token blocked while a valid token was cached")
	}
	return tokensource.Token{}
}

func TestEagerFetchesAtStartAndRefreshesAtRefreshPoint(t *testing.T) {
	clk := clocktest.New(t0)
	f := &fetcher{}
	f.set(hourTokens(clk))
	c := tokensource.New(f.fetch, clocktest.Options(tokensource.Options{Logger: quiet()}, clk))
	defer c.Close()
	eventually(t, "the initial fetch", func() bool { return clk.Pending() == 1 })
	if f.calls.Load() != 1 {
		t.Fatalf("calls at start = %d, want 1", f.calls.Load())
	}
	next, _ := clk.Next()
	if want := t0.Add(45 * time.Minute); !next.Equal(want) {
		t.Errorf("refresh scheduled at %v, want %v (expiry − lifetime/4)", next, want)
	}
	if tok := noWait(t, c); tok.Value != "tok-1" {
		t.Errorf("token = %v", tok.Value)
	}
	clk.Set(next)
	eventually(t, "the scheduled refresh", func() bool { return f.calls.Load() == 2 && clk.Pending() == 1 })
	if tok := noWait(t, c); tok.Value != "tok-2" {
		t.Errorf("after refresh token = %v", tok.Value)
	}
}

func TestEarlyRefreshWinsForShortLifetimes(t *testing.T) {
	clk := clocktest.New(t0)
	f := &fetcher{}
	f.set(func(context.Context, int64) (tokensource.Token, error) {
		return tokensource.Token{Value: "t", Expiry: clk.Now().Add(6 * time.Minute)}, nil
	})
	c := tokensource.New(f.fetch, clocktest.Options(tokensource.Options{Logger: quiet()}, clk))
	defer c.Close()
	eventually(t, "the initial fetch", func() bool { return clk.Pending() == 1 })
	// max(EarlyRefresh 2 min, lifetime/4 = 1.5 min) = 2 min before expiry.
	if next, _ := clk.Next(); !next.Equal(t0.Add(4 * time.Minute)) {
		t.Errorf("refresh at %v, want expiry − EarlyRefresh = %v", next, t0.Add(4*time.Minute))
	}
}

func TestLazyFetchesOnlyOnDemandAndStartsNothing(t *testing.T) {
	clk := clocktest.New(t0)
	f := &fetcher{}
	f.set(hourTokens(clk))
	before := goleak.IgnoreCurrent()
	c := tokensource.New(f.fetch, clocktest.Options(tokensource.Options{Mode: tokensource.Lazy, Logger: quiet()}, clk))
	defer c.Close()
	if f.calls.Load() != 0 || clk.Pending() != 0 {
		t.Fatalf("lazy New started work: calls %d, timers %d", f.calls.Load(), clk.Pending())
	}
	goleak.VerifyNone(t, leaktest.Options(before)...) // no goroutine after New
	for i := 0; i < 10; i++ {
		if _, err := c.Token(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	if f.calls.Load() != 1 || clk.Pending() != 0 {
		t.Errorf("calls %d (want 1), timers %d (want 0)", f.calls.Load(), clk.Pending())
	}
	goleak.VerifyNone(t, leaktest.Options(before)...) // nothing outlives the calls
	clk.Advance(46 * time.Minute)                     // past the refresh point
	tok, err := c.Token(t.Context())
	if err != nil || tok.Value != "tok-2" || f.calls.Load() != 2 {
		t.Errorf("lazy refresh: %v %v calls %d", tok.Value, err, f.calls.Load())
	}
}

func TestThousandCallersOneFetch(t *testing.T) {
	for _, mode := range []tokensource.Mode{tokensource.Lazy, tokensource.Eager} {
		t.Run(mode.String(), func(t *testing.T) {
			clk := clocktest.New(t0)
			release := make(chan struct{})
			f := &fetcher{}
			f.set(func(ctx context.Context, n int64) (tokensource.Token, error) {
				select {
				case <-release:
				case <-ctx.Done():
					return tokensource.Token{}, ctx.Err()
				}
				return tokensource.Token{Value: "shared", Expiry: clk.Now().Add(time.Hour)}, nil
			})
			c := tokensource.New(f.fetch, clocktest.Options(tokensource.Options{Mode: mode, Logger: quiet()}, clk))
			defer c.Close()
			var wg sync.WaitGroup
			var bad atomic.Int64
			var started sync.WaitGroup
			started.Add(1000)
			for i := 0; i < 1000; i++ {
				wg.Go(func() {
					started.Done()
					tok, err := c.Token(context.Background())
					if err != nil || tok.Value != "shared" {
						bad.Add(1)
					}
				})
			}
			started.Wait()
			close(release)
			wg.Wait()
			if n := f.calls.Load(); n != 1 {
				t.Errorf("fetches = %d, want exactly 1", n)
			}
			if bad.Load() > 0 {
				t.Errorf("%d callers failed", bad.Load())
			}
		})
	}
}

func TestOutageDuringRefreshWindowServesOldTokenWithoutWaiting(t *testing.T) {
	clk := clocktest.New(t0)
	f := &fetcher{}
	f.set(hourTokens(clk))
	c := tokensource.New(f.fetch, clocktest.Options(tokensource.Options{Logger: quiet()}, clk))
	defer c.Close()
	eventually(t, "the initial fetch", func() bool { return clk.Pending() == 1 })
	blocked := make(chan struct{})
	f.set(func(ctx context.Context, _ int64) (tokensource.Token, error) {
		close(blocked)
		<-ctx.Done() // the API hangs
		return tokensource.Token{}, ctx.Err()
	})
	clk.Advance(46 * time.Minute)
	<-blocked
	for i := 0; i < 100; i++ {
		if tok := noWait(t, c); tok.Value != "tok-1" {
			t.Fatalf("got %q, want the old token", tok.Value)
		}
	}
	// The refresh keeps failing (503): the old token is served until the
	// safety margin, then the error.
	f.set(func(context.Context, int64) (tokensource.Token, error) {
		return tokensource.Token{}, apiErr(503, "TEMPORARILY_UNAVAILABLE")
	})
	clk.Advance(10 * time.Second) // the hung attempt times out (AttemptTimeout 10 s)
	if tok := noWait(t, c); tok.Value != "tok-1" {
		t.Fatalf("got %q during the outage", tok.Value)
	}
}

func TestPermanentErrorFailsAfterOneCall(t *testing.T) {
	for _, status := range []int{400, 401, 403, 404} {
		t.Run(fmt.Sprint(status), func(t *testing.T) {
			f := &fetcher{}
			f.set(func(context.Context, int64) (tokensource.Token, error) {
				return tokensource.Token{}, apiErr(status, "X")
			})
			c := tokensource.New(f.fetch, tokensource.Options{Mode: tokensource.Lazy, Logger: quiet()})
			defer c.Close()
			for i := 0; i < 50; i++ {
				_, err := c.Token(t.Context())
				var te *tokensource.Error
				if !errors.As(err, &te) || te.Transient() || tokensource.IsTransient(err) {
					t.Fatalf("want a permanent *tokensource.Error, got %v", err)
				}
			}
			if n := f.calls.Load(); n != 1 {
				t.Errorf("calls = %d, want exactly 1 (no retry, failure remembered)", n)
			}
		})
	}
}

func TestTransientErrorsAreRetried(t *testing.T) {
	for _, status := range []int{429, 500, 503} {
		t.Run(fmt.Sprint(status), func(t *testing.T) {
			f := &fetcher{}
			f.set(func(_ context.Context, n int64) (tokensource.Token, error) {
				if n < 3 {
					return tokensource.Token{}, apiErr(status, "X")
				}
				return tokensource.Token{Value: "ok", Expiry: time.Now().Add(time.Hour)}, nil
			})
			c := tokensource.New(f.fetch, tokensource.Options{Mode: tokensource.Lazy, Logger: quiet(),
				RetrySchedule: []time.Duration{time.Millisecond, time.Millisecond, time.Millisecond}})
			defer c.Close()
			tok, err := c.Token(t.Context())
			if err != nil || tok.Value != "ok" || f.calls.Load() != 3 {
				t.Errorf("got %v %v after %d calls, want ok after 3", tok.Value, err, f.calls.Load())
			}
		})
	}
}

func TestBadExpiryMakesNoTightLoop(t *testing.T) {
	for name, resp := range map[string]func(now time.Time) (tokensource.Token, error){
		"past": func(now time.Time) (tokensource.Token, error) {
			return tokensource.Token{Value: "v", Expiry: now.Add(-time.Minute)}, nil
		},
		"zero": func(time.Time) (tokensource.Token, error) { return tokensource.Token{Value: "v"}, nil },
		"soon": func(now time.Time) (tokensource.Token, error) { // inside the safety margin
			return tokensource.Token{Value: "v", Expiry: now.Add(time.Second)}, nil
		},
		"empty": func(now time.Time) (tokensource.Token, error) {
			return tokensource.Token{Expiry: now.Add(time.Hour)}, nil
		},
		"403": func(time.Time) (tokensource.Token, error) {
			return tokensource.Token{}, apiErr(403, "PERMISSION_DENIED")
		},
	} {
		t.Run(name, func(t *testing.T) {
			clk := clocktest.New(t0)
			f := &fetcher{}
			f.set(func(context.Context, int64) (tokensource.Token, error) { return resp(clk.Now()) })
			c := tokensource.New(f.fetch, clocktest.Options(tokensource.Options{Logger: quiet()}, clk))
			defer c.Close()
			end := t0.Add(time.Hour)
			for clk.Now().Before(end) {
				eventually(t, "a scheduled retry", func() bool { return clk.Pending() > 0 })
				next, _ := clk.Next()
				clk.Set(next)
				// Callers in between must not fetch either.
				for i := 0; i < 10; i++ {
					if _, err := c.Token(t.Context()); err == nil {
						t.Fatal("a token with a bad expiry was handed out")
					}
				}
			}
			n := f.calls.Load()
			t.Logf("%s: %d fetches over a simulated hour", name, n)
			// Backoff 5 s doubling to a 2 min cap, jittered into [d/2, d]:
			// about 50 in an hour. A tight loop would make thousands.
			if n > 75 {
				t.Errorf("%d fetches in an hour: backoff does not hold", n)
			}
		})
	}
}

func TestCloseWhileFetchInFlight(t *testing.T) {
	entered := make(chan struct{})
	f := &fetcher{}
	f.set(func(ctx context.Context, _ int64) (tokensource.Token, error) {
		close(entered)
		<-ctx.Done()
		return tokensource.Token{}, ctx.Err()
	})
	c := tokensource.New(f.fetch, tokensource.Options{Mode: tokensource.Lazy, Logger: quiet()})
	errc := make(chan error, 1)
	go func() { _, err := c.Token(context.Background()); errc <- err }()
	<-entered
	done := make(chan struct{})
	go func() { _ = c.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Close blocked on an in-flight fetch")
	}
	if err := <-errc; !errors.Is(err, tokensource.ErrClosed) {
		t.Errorf("waiter got %v, want ErrClosed", err)
	}
	if _, err := c.Token(t.Context()); !errors.Is(err, tokensource.ErrClosed) {
		t.Errorf("Token after Close: %v", err)
	}
	if _, err := c.Refresh(t.Context(), tokensource.Token{}); !errors.Is(err, tokensource.ErrClosed) {
		t.Errorf("Refresh after Close: %v", err)
	}
	if err := c.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestCancelledWaiterDoesNotCancelTheFetch(t *testing.T) {
	release := make(chan struct{})
	entered := make(chan struct{}, 1)
	f := &fetcher{}
	f.set(func(ctx context.Context, _ int64) (tokensource.Token, error) {
		entered <- struct{}{}
		select {
		case <-release:
		case <-ctx.Done():
			return tokensource.Token{}, ctx.Err()
		}
		return tokensource.Token{Value: "v", Expiry: time.Now().Add(time.Hour)}, nil
	})
	c := tokensource.New(f.fetch, tokensource.Options{Mode: tokensource.Lazy, Logger: quiet()})
	defer c.Close()
	ctxA, cancelA := context.WithCancel(context.Background())
	errA := make(chan error, 1)
	go func() { _, err := c.Token(ctxA); errA <- err }()
	<-entered
	resB := make(chan error, 1)
	go func() { _, err := c.Token(context.Background()); resB <- err }()
	cancelA()
	if err := <-errA; !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled waiter: %v", err)
	}
	close(release)
	if err := <-resB; err != nil {
		t.Errorf("other waiter: %v", err)
	}
	if f.calls.Load() != 1 {
		t.Errorf("calls = %d, want 1", f.calls.Load())
	}
}

func TestClockJumpPastExpiryRefreshesBeforeHandingOut(t *testing.T) {
	clk := clocktest.New(t0)
	f := &fetcher{}
	f.set(hourTokens(clk))
	c := tokensource.New(f.fetch, clocktest.Options(tokensource.Options{Logger: quiet()}, clk))
	defer c.Close()
	eventually(t, "the initial fetch", func() bool { return clk.Pending() == 1 })
	clk.Set(t0.Add(3 * time.Hour)) // the host slept
	tok, err := c.Token(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if !tok.Valid(clk.Now(), 30*time.Second) {
		t.Errorf("after the jump got %v, which is expired at %v", tok, clk.Now())
	}
}

func TestRefreshSingleFlight(t *testing.T) {
	f := &fetcher{}
	f.set(hourTokens(clock.System()))
	c := tokensource.New(f.fetch, tokensource.Options{Mode: tokensource.Lazy, Logger: quiet()})
	defer c.Close()
	first, err := c.Token(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := 0; i < 50; i++ {
		wg.Go(func() {
			tok, err := c.Refresh(context.Background(), first)
			if err != nil || tok.Value == first.Value {
				t.Errorf("Refresh returned %v, %v", tok.Value, err)
			}
		})
	}
	wg.Wait()
	if n := f.calls.Load(); n != 2 {
		t.Errorf("fetches = %d, want 2 (initial + one refresh for 50 stale callers)", n)
	}
}

func TestNoTokenInLogsErrorsOrSpans(t *testing.T) {
	const marker = "SECRETMARKER"
	var logs bytes.Buffer
	var mu sync.Mutex
	logger := slog.New(slog.NewTextHandler(writerFunc(func(p []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		return logs.Write(p)
	}), &slog.HandlerOptions{Level: slog.LevelDebug}))
	rec := tracetest.NewSpanRecorder()
	tp := trace.NewTracerProvider(trace.WithSpanProcessor(rec))
	defer tp.Shutdown(context.Background())
	f := &fetcher{}
	f.set(func(_ context.Context, n int64) (tokensource.Token, error) {
		switch n {
		case 1:
			return tokensource.Token{Value: marker + "-1", Expiry: time.Now().Add(time.Hour)}, nil
		case 2:
			return tokensource.Token{Value: marker + "-2", Expiry: time.Now().Add(-time.Hour)}, nil
		}
		return tokensource.Token{}, apiErr(503, "TEMPORARILY_UNAVAILABLE")
	})
	c := tokensource.New(f.fetch, tokensource.Options{Mode: tokensource.Lazy, Logger: logger, TracerProvider: tp, RetrySchedule: []time.Duration{}})
	defer c.Close()
	tok, err := c.Token(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	_, err2 := c.Refresh(t.Context(), tok)
	var all strings.Builder
	fmt.Fprintf(&all, "%v %+v %#v %s %q %v\n", tok, tok, tok, tok, tok, err2)
	slog.New(slog.NewTextHandler(&all, nil)).Info("tok", "token", tok)
	mu.Lock()
	all.Write(logs.Bytes())
	mu.Unlock()
	for _, s := range rec.Ended() {
		for _, a := range s.Attributes() {
			all.WriteString(string(a.Key) + "=" + a.Value.String() + "\n")
		}
		all.WriteString(s.Status().Description + "\n")
		for _, e := range s.Events() {
			for _, a := range e.Attributes {
				all.WriteString(a.Value.String() + "\n")
			}
		}
	}
	if err2 == nil || len(rec.Ended()) < 2 {
		t.Fatalf("the check needs a failure and spans: err %v, spans %d", err2, len(rec.Ended()))
	}
	if strings.Contains(all.String(), marker) {
		t.Errorf("token leaked:\n%s", all.String())
	}
	if !strings.Contains(all.String(), "expiry") {
		t.Errorf("expected the expiry to be visible:\n%s", all.String())
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

func TestIsTransient(t *testing.T) {
	opErr := &net.OpError{Op: "dial", Net: "tcp", Err: timeoutErr{}}
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{apiErr(429, "REQUEST_LIMIT_EXCEEDED"), true},
		{apiErr(500, "INTERNAL_ERROR"), true},
		{apiErr(503, "TEMPORARILY_UNAVAILABLE"), true},
		{fmt.Errorf("wrapped: %w", apiErr(502, "")), true},
		{apiErr(400, "INVALID_PARAMETER_VALUE"), false},
		{apiErr(401, "UNAUTHENTICATED"), false},
		{apiErr(403, "PERMISSION_DENIED"), false},
		{apiErr(404, "RESOURCE_DOES_NOT_EXIST"), false},
		{opErr, true},
		{context.DeadlineExceeded, true},
		{context.Canceled, false},
		{tokensource.ErrClosed, false},
		{&tokensource.ValidationError{Field: "token", Reason: "is empty"}, false},
		{&tokensource.ConfigError{Setting: "x"}, false},
		{errors.New("other"), false},
		{nil, false},
	} {
		if got := tokensource.IsTransient(tc.err); got != tc.want {
			t.Errorf("IsTransient(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

func TestParseMode(t *testing.T) {
	for s, want := range map[string]tokensource.Mode{"": tokensource.Eager, "eager": tokensource.Eager, "lazy": tokensource.Lazy} {
		if m, err := tokensource.ParseMode(s); err != nil || m != want {
			t.Errorf("ParseMode(%q) = %v, %v", s, m, err)
		}
	}
	if _, err := tokensource.ParseMode("sometimes"); err == nil {
		t.Error("ParseMode accepted an unknown mode")
	}
}
