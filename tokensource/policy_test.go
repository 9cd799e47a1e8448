package tokensource_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/lakebase-go/lakebase/internal/clock"
	"github.com/lakebase-go/lakebase/internal/clocktest"
	"github.com/lakebase-go/lakebase/tokensource"
)

// A FetchFunc that ignores its ctx must not block Close forever, and the
// callers waiting for it are released with ErrClosed.
func TestCloseWithFetchIgnoringContext(t *testing.T) {
	release := make(chan struct{})
	returned := make(chan struct{})
	entered := make(chan struct{})
	f := &fetcher{}
	f.set(func(context.Context, int64) (tokensource.Token, error) {
		close(entered)
		defer close(returned)
		<-release // ignores ctx
		return tokensource.Token{Value: "late", Expiry: time.Now().Add(time.Hour)}, nil
	})
	c := tokensource.New(f.fetch, tokensource.Options{Mode: tokensource.Lazy, Logger: quiet()})
	errc := make(chan error, 1)
	go func() { _, err := c.Token(context.Background()); errc <- err }()
	<-entered
	done := make(chan struct{})
	go func() { _ = c.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second): // hang detector, not a timing assertion
		t.Fatal("Close blocked on a FetchFunc that ignores ctx")
	}
	select {
	case err := <-errc:
		if !errors.Is(err, tokensource.ErrClosed) {
			t.Errorf("waiter got %v, want ErrClosed", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("a waiter was not released by Close")
	}
	close(release)
	<-returned
	if _, err := c.Token(t.Context()); !errors.Is(err, tokensource.ErrClosed) {
		t.Errorf("Token after Close: %v (the late token must not be served)", err)
	}
}

// An eager source whose first fetch fails transiently retries on
// RetrySchedule for the caller waiting for its first token.
func TestEagerStartupRetriesTransientForWaitingCaller(t *testing.T) {
	f := &fetcher{}
	f.set(func(_ context.Context, n int64) (tokensource.Token, error) {
		if n < 3 {
			return tokensource.Token{}, apiErr(503, "TEMPORARILY_UNAVAILABLE")
		}
		return tokensource.Token{Value: "ok", Expiry: time.Now().Add(time.Hour)}, nil
	})
	c := tokensource.New(f.fetch, tokensource.Options{Logger: quiet(),
		RetrySchedule: []time.Duration{time.Millisecond, time.Millisecond, time.Millisecond}})
	defer c.Close()
	tok, err := c.Token(t.Context())
	if err != nil || tok.Value != "ok" || f.calls.Load() != 3 {
		t.Fatalf("got %q, %v after %d calls; want ok after 3", tok.Value, err, f.calls.Load())
	}
}

// An outage through the whole refresh window: the old token is served
// until its safety margin, background retries back off (floor respected,
// never past the usable window), then callers get a transient error, and
// the source recovers when the API does.
func TestEagerOutageBackoffWithinUsableWindow(t *testing.T) {
	clk := clocktest.New(t0)
	const floor = 5 * time.Second
	var mu sync.Mutex
	var attempts []time.Time
	f := &fetcher{}
	f.set(hourTokens(clk))
	c := tokensource.New(f.fetch, clocktest.Options(tokensource.Options{Logger: quiet(), RetrySchedule: []time.Duration{}}, clk))
	defer c.Close()
	eventually(t, "the initial fetch", func() bool { return clk.Pending() == 1 })
	f.set(func(context.Context, int64) (tokensource.Token, error) {
		mu.Lock()
		attempts = append(attempts, clk.Now())
		mu.Unlock()
		return tokensource.Token{}, apiErr(503, "TEMPORARILY_UNAVAILABLE")
	})
	usableUntil := t0.Add(time.Hour - 30*time.Second)
	for {
		next, ok := clk.Next()
		if !ok {
			eventually(t, "a scheduled retry", func() bool { return clk.Pending() > 0 })
			continue
		}
		if !next.Before(usableUntil) {
			break
		}
		clk.Set(next)
		eventually(t, "the retry to be scheduled", func() bool { n, ok := clk.Next(); return ok && n.After(next) })
		if tok := noWait(t, c); tok.Value != "tok-1" {
			t.Fatalf("at %v got %q, want the old token", clk.Now(), tok.Value)
		}
	}
	mu.Lock()
	n := len(attempts)
	last := attempts[n-1]
	for i := 1; i < n; i++ {
		if gap := attempts[i].Sub(attempts[i-1]); gap < floor {
			t.Errorf("retries %v apart, below the %v floor", gap, floor)
		}
	}
	mu.Unlock()
	t.Logf("%d background attempts in the 15-minute refresh window; last at expiry−%v", n, t0.Add(time.Hour).Sub(last))
	if n < 3 || n > 30 {
		t.Errorf("%d attempts in the window: want a few, backing off", n)
	}
	if last.Before(usableUntil.Add(-2 * floor)) {
		t.Errorf("last attempt before the token became unusable at %v, want within 2 floors of %v", last, usableUntil)
	}
	// Past the usable window: no expired token, an error instead.
	clk.Set(usableUntil)
	if tok, err := c.Token(t.Context()); err == nil || !tokensource.IsTransient(err) {
		t.Fatalf("after the usable window got %v, %v; want a transient error", tok, err)
	}
	// The API comes back; the next background retry restores service.
	f.set(hourTokens(clk))
	eventually(t, "a scheduled retry", func() bool { return clk.Pending() > 0 })
	next, _ := clk.Next()
	clk.Set(next)
	eventually(t, "recovery", func() bool {
		tok, err := c.Token(t.Context())
		return err == nil && tok.Valid(clk.Now(), 30*time.Second)
	})
}

func TestRefreshSemantics(t *testing.T) {
	f := &fetcher{}
	f.set(hourTokens(clock.System()))
	c := tokensource.New(f.fetch, tokensource.Options{Mode: tokensource.Lazy, Logger: quiet()})
	defer c.Close()
	// Nothing cached: Refresh fetches.
	first, err := c.Refresh(t.Context(), tokensource.Token{})
	if err != nil || first.Value != "tok-1" {
		t.Fatalf("Refresh on empty cache: %v %v", first.Value, err)
	}
	// The cached token is not the stale one: no fetch.
	if tok, err := c.Refresh(t.Context(), tokensource.Token{Value: "something-older"}); err != nil || tok.Value != "tok-1" || f.calls.Load() != 1 {
		t.Fatalf("Refresh(other) = %v %v after %d calls; want the cached token, no fetch", tok.Value, err, f.calls.Load())
	}
	// The cached token is stale: a new one.
	second, err := c.Refresh(t.Context(), first)
	if err != nil || second.Value != "tok-2" {
		t.Fatalf("Refresh(stale) = %v %v", second.Value, err)
	}
	if tok, _ := c.Token(t.Context()); tok.Value != "tok-2" {
		t.Fatalf("Token after Refresh = %v", tok.Value)
	}
	// A rejected credential with a failing API: the error, no fallback to
	// the rejected token, and no second fetch while it is remembered.
	f.set(func(context.Context, int64) (tokensource.Token, error) {
		return tokensource.Token{}, apiErr(403, "PERMISSION_DENIED")
	})
	for i := 0; i < 5; i++ {
		tok, err := c.Refresh(t.Context(), second)
		var te *tokensource.Error
		if !errors.As(err, &te) || te.Kind != tokensource.KindAuth || tok.Value != "" {
			t.Fatalf("Refresh with 403: %v %v", tok.Value, err)
		}
	}
	if n := f.calls.Load(); n != 3 {
		t.Errorf("fetches = %d, want 3 (the 403 is remembered)", n)
	}
	// Token still serves the valid (not rejected by this source) token.
	if tok, err := c.Token(t.Context()); err != nil || tok.Value != "tok-2" {
		t.Errorf("Token after a failed Refresh = %v %v", tok.Value, err)
	}
}

// The lazy caller that crosses the refresh point falls back to the old
// token when the refresh fails; others do not wait for it.
func TestLazyRefreshFailureFallsBackToOldToken(t *testing.T) {
	clk := clocktest.New(t0)
	f := &fetcher{}
	f.set(hourTokens(clk))
	c := tokensource.New(f.fetch, clocktest.Options(tokensource.Options{Mode: tokensource.Lazy, Logger: quiet()}, clk))
	defer c.Close()
	if _, err := c.Token(t.Context()); err != nil {
		t.Fatal(err)
	}
	entered := make(chan struct{})
	release := make(chan struct{})
	f.set(func(context.Context, int64) (tokensource.Token, error) {
		close(entered)
		<-release
		return tokensource.Token{}, apiErr(500, "INTERNAL_ERROR")
	})
	clk.Advance(50 * time.Minute)
	res := make(chan tokensource.Token, 1)
	go func() { tok, _ := c.Token(context.Background()); res <- tok }()
	<-entered
	for i := 0; i < 10; i++ { // concurrent callers do not wait
		if tok := noWait(t, c); tok.Value != "tok-1" {
			t.Fatalf("concurrent caller got %q", tok.Value)
		}
	}
	close(release)
	if tok := <-res; tok.Value != "tok-1" {
		t.Errorf("the refreshing caller got %q, want the old token after the failure", tok.Value)
	}
	if n := f.calls.Load(); n != 2 {
		t.Errorf("fetches = %d, want 2", n)
	}
}

func TestFetchPanicAndNilFetchAreErrors(t *testing.T) {
	c := tokensource.New(func(context.Context) (tokensource.Token, error) { panic("boom") },
		tokensource.Options{Mode: tokensource.Lazy, Logger: quiet()})
	defer c.Close()
	if _, err := c.Token(t.Context()); err == nil || !strings.Contains(err.Error(), "panicked") {
		t.Errorf("panic: %v", err)
	}
	n := tokensource.New(nil, tokensource.Options{Mode: tokensource.Lazy, Logger: quiet()})
	defer n.Close()
	var ce *tokensource.ConfigError
	if _, err := n.Token(t.Context()); !errors.As(err, &ce) || ce.Setting != "FetchFunc" {
		t.Errorf("nil FetchFunc: %v", err)
	}
}

func TestTelemetry(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	defer tp.Shutdown(context.Background())
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer mp.Shutdown(context.Background())
	exp := time.Date(2099, 1, 2, 3, 4, 5, 0, time.UTC)
	f := &fetcher{}
	f.set(func(_ context.Context, n int64) (tokensource.Token, error) {
		if n == 1 {
			return tokensource.Token{}, apiErr(403, "PERMISSION_DENIED")
		}
		return tokensource.Token{Value: "v", Expiry: exp}, nil
	})
	c := tokensource.New(f.fetch, tokensource.Options{Mode: tokensource.Lazy, Logger: quiet(),
		TracerProvider: tp, MeterProvider: mp, BackgroundRetryMin: time.Nanosecond, BackgroundRetryMax: time.Nanosecond,
		Attributes: []attribute.KeyValue{attribute.String("lakebase.endpoint", "projects/p/branches/b/endpoints/e")}})
	defer c.Close()
	if _, err := c.Token(t.Context()); err == nil {
		t.Fatal("want the 403")
	}
	eventually(t, "the failure memory to lapse", func() bool { _, err := c.Token(t.Context()); return err == nil })
	spans := rec.Ended()
	if len(spans) != 2 {
		t.Fatalf("%d spans, want 2", len(spans))
	}
	attrs := func(s sdktrace.ReadOnlySpan) map[string]string {
		m := map[string]string{}
		for _, a := range s.Attributes() {
			m[string(a.Key)] = a.Value.String()
		}
		return m
	}
	bad, good := attrs(spans[0]), attrs(spans[1])
	for _, m := range []map[string]string{bad, good} {
		if m["lakebase.token.mode"] != "lazy" || m["lakebase.endpoint"] != "projects/p/branches/b/endpoints/e" {
			t.Errorf("span attributes %v", m)
		}
	}
	if spans[0].Name() != tokensource.SpanFetch || bad["error.type"] != "PERMISSION_DENIED" || spans[0].Status().Code.String() != "Error" {
		t.Errorf("failed span: %s %v %v", spans[0].Name(), bad, spans[0].Status())
	}
	if good["lakebase.token.expiry"] != "2099-01-02T03:04:05Z" || good["error.type"] != "" {
		t.Errorf("ok span attributes %v", good)
	}
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(t.Context(), &rm); err != nil {
		t.Fatal(err)
	}
	var durations uint64
	failures := map[string]int64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			switch d := m.Data.(type) {
			case metricdata.Histogram[float64]:
				if m.Name == tokensource.MetricDuration && m.Unit == "s" {
					for _, p := range d.DataPoints {
						durations += p.Count
					}
				}
			case metricdata.Sum[int64]:
				if m.Name == tokensource.MetricFailures {
					for _, p := range d.DataPoints {
						v, _ := p.Attributes.Value("error.type")
						failures[v.String()] += p.Value
					}
				}
			}
		}
	}
	if durations != 2 || failures["PERMISSION_DENIED"] != 1 || len(failures) != 1 {
		t.Errorf("metrics: %d durations (want 2), failures %v (want PERMISSION_DENIED:1)", durations, failures)
	}
}

func TestTokenFormattingAndValid(t *testing.T) {
	exp := time.Date(2030, 5, 6, 7, 8, 9, 0, time.UTC)
	tok := tokensource.Token{Value: "SECRETVALUE", Expiry: exp}
	var logs strings.Builder
	slog.New(slog.NewJSONHandler(&logs, nil)).Info("x", "tok", tok)
	out := fmt.Sprintf("%v|%+v|%#v|%s|%q|%x|%d", tok, tok, tok, tok, tok, tok, tok) + logs.String() +
		fmt.Sprint(tok) + fmt.Sprint([]tokensource.Token{tok}) + fmt.Sprintf("%+v", struct{ T tokensource.Token }{tok})
	if strings.Contains(out, "SECRETVALUE") || !strings.Contains(out, "2030-05-06T07:08:09Z") {
		t.Errorf("formatting: %s", out)
	}
	now := exp.Add(-time.Minute)
	for _, tc := range []struct {
		tok    tokensource.Token
		margin time.Duration
		want   bool
	}{
		{tok, 0, true},
		{tok, 59 * time.Second, true},
		{tok, time.Minute, false},
		{tokensource.Token{Value: "x", Expiry: now.Add(-time.Second)}, 0, false},
		{tokensource.Token{Expiry: exp}, 0, false},
		{tokensource.Token{Value: "static"}, time.Hour, true}, // zero expiry: never expires
	} {
		if got := tc.tok.Valid(now, tc.margin); got != tc.want {
			t.Errorf("%v.Valid(now, %v) = %v, want %v", tc.tok, tc.margin, got, tc.want)
		}
	}
}

func TestErrorMessages(t *testing.T) {
	e := &tokensource.Error{Op: "fetch", Kind: tokensource.KindAuth, Err: apiErr(403, "PERMISSION_DENIED")}
	if !strings.HasPrefix(e.Error(), "tokensource: fetch failed (auth, PERMISSION_DENIED, HTTP 403): injected") || e.Transient() || !errors.Is(e, e.Err) {
		t.Errorf("Error: %q", e.Error())
	}
	ce := &tokensource.ConfigError{Setting: "TTL", Problem: "1m is outside 5m..1h", Fix: "use 5 minutes to 1 hour"}
	if ce.Error() != "tokensource: TTL: 1m is outside 5m..1h (fix: use 5 minutes to 1 hour)" {
		t.Errorf("ConfigError: %q", ce.Error())
	}
	for k := tokensource.KindUnknown; k <= tokensource.KindClosed; k++ {
		if k.String() == "" || (k != tokensource.KindUnknown && k.String() == "unknown") {
			t.Errorf("Kind(%d).String() = %q", k, k.String())
		}
	}
}
