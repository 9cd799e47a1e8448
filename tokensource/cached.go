package tokensource

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/lakebase-go/lakebase/internal/clock"
)

// The defaults of Options' zero fields.
const (
	DefaultEarlyRefresh       = 2 * time.Minute
	DefaultSafetyMargin       = 30 * time.Second
	DefaultAttemptTimeout     = 10 * time.Second
	DefaultBackgroundRetryMin = 5 * time.Second
	DefaultBackgroundRetryMax = 2 * time.Minute
)

// DefaultRetrySchedule is the RetrySchedule of nil Options.RetrySchedule.
func DefaultRetrySchedule() []time.Duration {
	return []time.Duration{100 * time.Millisecond, 500 * time.Millisecond, 2 * time.Second}
}

// Options configure a Cached source. As everywhere in this module, a zero
// field means its documented default and a negative duration means off, or
// is an error where off makes no sense (then every Token call returns a
// *Error of kind config naming the field).
type Options struct {
	Mode Mode // zero: Eager

	// EarlyRefresh: the token is refreshed at
	// expiry − max(EarlyRefresh, lifetime/4). Zero: DefaultEarlyRefresh
	// (2 min); negative: off (lifetime/4 only).
	EarlyRefresh time.Duration
	// SafetyMargin: a token expiring within this is never handed out.
	// Zero: DefaultSafetyMargin (30 s); negative: off (a token is handed
	// out until its expiry).
	SafetyMargin time.Duration
	// AttemptTimeout bounds each fetch attempt (the SDK's own retry loop
	// could otherwise hold a call for 5 minutes). Zero:
	// DefaultAttemptTimeout (10 s); negative: off (an attempt ends only
	// with Close).
	AttemptTimeout time.Duration
	// RetrySchedule is the wait before each retry of a transient failure
	// while no usable token is cached (callers are waiting). Nil:
	// DefaultRetrySchedule (100 ms, 500 ms, 2 s). Empty but not nil: no
	// retry. A negative wait is an error.
	RetrySchedule []time.Duration
	// BackgroundRetryMin is the floor of the jittered exponential backoff
	// after a failed background refresh, and how long a failure is
	// remembered before callers trigger another fetch. Zero:
	// DefaultBackgroundRetryMin (5 s); negative: an error (a backoff
	// without a floor would hammer the workspace).
	BackgroundRetryMin time.Duration
	// BackgroundRetryMax caps the backoff. Zero: DefaultBackgroundRetryMax
	// (2 min), or BackgroundRetryMin if that is larger; negative: an error.
	BackgroundRetryMax time.Duration

	Logger         *slog.Logger         // nil: slog.Default()
	TracerProvider trace.TracerProvider // nil: the otel global
	MeterProvider  metric.MeterProvider // nil: the otel global
	// Attributes are added to every span and metric (for example
	// lakebase.endpoint).
	Attributes []attribute.KeyValue

	clock clock.Clock // nil: the system clock (this module's tests set it)
}

func init() {
	clock.SetTokenOptions = func(opts any, c clock.Clock) { opts.(*Options).clock = c }
}

// check reports the first setting that has no meaning.
func (o Options) check() error {
	bad := func(setting, problem, fix string) error {
		return &ConfigError{Setting: "Options." + setting, Problem: problem, Fix: fix}
	}
	switch {
	case o.Mode != Eager && o.Mode != Lazy:
		return bad("Mode", "unknown refresh mode", "use Eager or Lazy")
	case o.BackgroundRetryMin < 0:
		return bad("BackgroundRetryMin", "negative", "use a positive floor, or zero for the default (5 s)")
	case o.BackgroundRetryMax < 0:
		return bad("BackgroundRetryMax", "negative", "use a positive cap, or zero for the default (2 min)")
	}
	for _, d := range o.RetrySchedule {
		if d < 0 {
			return bad("RetrySchedule", "holds a negative wait", "use waits of zero or more, or an empty schedule for no retry")
		}
	}
	return nil
}

func (o Options) withDefaults() Options {
	switch {
	case o.EarlyRefresh == 0:
		o.EarlyRefresh = DefaultEarlyRefresh
	case o.EarlyRefresh < 0:
		o.EarlyRefresh = 0
	}
	switch {
	case o.SafetyMargin == 0:
		o.SafetyMargin = DefaultSafetyMargin
	case o.SafetyMargin < 0:
		o.SafetyMargin = 0
	}
	if o.AttemptTimeout == 0 {
		o.AttemptTimeout = DefaultAttemptTimeout
	}
	if o.RetrySchedule == nil {
		o.RetrySchedule = DefaultRetrySchedule()
	}
	if o.BackgroundRetryMin <= 0 {
		o.BackgroundRetryMin = DefaultBackgroundRetryMin
	}
	if o.BackgroundRetryMax <= 0 {
		o.BackgroundRetryMax = DefaultBackgroundRetryMax
	}
	o.BackgroundRetryMax = max(o.BackgroundRetryMax, o.BackgroundRetryMin)
	if o.clock == nil {
		o.clock = clock.System()
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

// state is one cached token with its precomputed deadlines (wall-clock
// Unix nanoseconds). It is immutable once published.
type state struct {
	tok         Token
	refreshAt   int64 // start refreshing from here
	usableUntil int64 // expiry − SafetyMargin: never handed out after
}

// call is one fetch in flight; waiters block on done.
type call struct {
	done chan struct{}
	tok  Token
	err  error
	last atomic.Pointer[error] // the latest failed attempt, while retrying
}

// Cached is a Source that caches the token of a FetchFunc and refreshes it
// ahead of expiry (see Mode). It is safe for concurrent use by multiple
// goroutines. The hit path is one atomic load and one clock read: no lock,
// no allocation.
//
// Each fetch runs in its own goroutine so that every waiting caller can give
// up with its own context while the fetch carries on for the others; the
// fetch's context derives from the source's lifetime (cancelled by Close)
// and is bounded by AttemptTimeout. A fetch is retried on RetrySchedule only
// for transient failures and only while no usable token is cached. A
// failure is remembered for the backoff period (at least
// BackgroundRetryMin): meanwhile callers without a usable token get that
// error at once instead of starting another fetch.
//
// Close stops everything it started.
type Cached struct {
	fetch  FetchFunc
	o      Options
	sysClk bool
	cur    atomic.Pointer[state]
	closed atomic.Bool

	ctx    context.Context // cancelled by Close; parent of every fetch
	cancel context.CancelFunc
	wg     sync.WaitGroup // fetch goroutines

	mu       sync.Mutex
	inflight *call
	timer    clock.Timer // the next background refresh (Eager)
	timerGen uint64      // identifies the current timer; stale callbacks do nothing
	failures int         // consecutive failed fetches, for backoff
	lastErr  error       // the last failure, served until failUntil

	// Lock-free views for callers holding a valid token past its refresh
	// point: a fetch is running, or a failure is remembered until then.
	busy      atomic.Bool
	failUntil atomic.Int64

	tel *telemetry
}

var (
	_ Source    = (*Cached)(nil)
	_ Refresher = (*Cached)(nil)
	_ io.Closer = (*Cached)(nil)
)

// New returns a Cached source over fetch. In Eager mode (the default) the
// first fetch starts at once in the background and later refreshes are
// scheduled ahead of expiry; in Lazy mode nothing runs until Token is
// called. Close the source when done.
func New(fetch FetchFunc, opts Options) *Cached {
	o := opts.withDefaults()
	sys := clock.IsSystem(o.clock)
	ctx, cancel := context.WithCancel(context.Background())
	c := &Cached{fetch: fetch, o: o, sysClk: sys, ctx: ctx, cancel: cancel, tel: newTelemetry(o)}
	if err := opts.check(); err != nil {
		c.fetch = func(context.Context) (Token, error) { return Token{}, err }
	} else if fetch == nil {
		c.fetch = func(context.Context) (Token, error) {
			return Token{}, &ConfigError{Setting: "FetchFunc", Problem: "nil", Fix: "pass a function that mints a token"}
		}
	}
	if o.Mode == Eager {
		c.mu.Lock()
		c.startLocked(c.now())
		c.mu.Unlock()
	}
	return c
}

func (c *Cached) now() int64 {
	if c.sysClk {
		return time.Now().UnixNano()
	}
	return c.o.clock.Now().UnixNano()
}

// Token returns a valid token, fetching one if none is cached. In Eager
// mode a caller never waits while a valid token is cached. A caller waiting
// for a fetch gives up when its ctx is done without cancelling the fetch for
// others.
func (c *Cached) Token(ctx context.Context) (Token, error) {
	if st := c.cur.Load(); st != nil && c.now() < st.refreshAt {
		return st.tok, nil // Close stores nil, so no closed check is needed
	}
	return c.slow(ctx, nil)
}

// Refresh implements Refresher: it returns a token other than stale,
// fetching one unless the cached token is usable and already differs from
// stale. It shares any fetch in flight. While a failure is remembered (see
// Cached) it returns that failure without fetching.
func (c *Cached) Refresh(ctx context.Context, stale Token) (Token, error) {
	return c.slow(ctx, &stale)
}

func (c *Cached) slow(ctx context.Context, stale *Token) (Token, error) {
	if c.closed.Load() {
		return Token{}, ErrClosed
	}
	now := c.now()
	st := c.cur.Load()
	valid := st != nil && now < st.usableUntil
	if valid && stale == nil && (now < st.refreshAt || c.busy.Load() || now < c.failUntil.Load()) {
		// Past the refresh point but a refresh is running or has just
		// failed: keep serving the valid token without taking the lock.
		return st.tok, nil
	}
	c.mu.Lock()
	if c.closed.Load() {
		c.mu.Unlock()
		return Token{}, ErrClosed
	}
	st = c.cur.Load()
	valid = st != nil && now < st.usableUntil
	if valid && stale == nil {
		// A valid token: never make the caller wait, except the one lazy
		// caller that starts the refresh (it falls back to this token).
		if now < st.refreshAt || c.inflight != nil || now < c.failUntil.Load() {
			c.mu.Unlock()
			return st.tok, nil
		}
		cl := c.startLocked(now)
		c.mu.Unlock()
		if c.o.Mode == Eager {
			return st.tok, nil
		}
		select {
		case <-cl.done:
			if cl.err == nil {
				return cl.tok, nil
			}
		case <-ctx.Done():
		case <-c.ctx.Done():
		}
		return st.tok, nil
	}
	if stale != nil && valid && st.tok.Value != stale.Value {
		c.mu.Unlock()
		return st.tok, nil // someone refreshed already
	}
	cl := c.inflight
	if cl == nil {
		if c.lastErr != nil && now < c.failUntil.Load() {
			err := c.lastErr // remembered failure: no fetch storm
			c.mu.Unlock()
			return Token{}, err
		}
		cl = c.startLocked(now)
	}
	c.mu.Unlock()
	select {
	case <-cl.done:
	case <-ctx.Done():
		if last := cl.last.Load(); last != nil {
			// The caller gives up while fetches fail: say why they fail.
			return Token{}, fmt.Errorf("tokensource: waiting for a token: %w; the last fetch attempt failed: %w", ctx.Err(), *last)
		}
		return Token{}, fmt.Errorf("tokensource: waiting for a token: %w", ctx.Err())
	case <-c.ctx.Done():
		// Closed; do not wait for a FetchFunc that may ignore its ctx.
		return Token{}, ErrClosed
	}
	if cl.err != nil {
		return Token{}, cl.err
	}
	return cl.tok, nil
}

// startLocked starts a fetch goroutine (c.mu held) and returns its call.
// Transient failures are retried on RetrySchedule only when no usable
// token is cached at now; otherwise the fetch makes one attempt (the old
// token stays in service and the background backoff takes over).
func (c *Cached) startLocked(now int64) *call {
	var schedule []time.Duration
	if st := c.cur.Load(); st == nil || now >= st.usableUntil {
		schedule = c.o.RetrySchedule
	}
	cl := &call{done: make(chan struct{})}
	c.inflight = cl
	c.busy.Store(true)
	c.timerGen++ // a timer already firing must not start another fetch
	if c.timer != nil {
		c.timer.Stop()
		c.timer = nil
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		tok, err := c.fetchWithRetry(cl, schedule)
		c.finish(cl, tok, err)
	}()
	return cl
}

// fetchWithRetry runs attempts until success, a permanent failure, the end
// of schedule, or Close.
func (c *Cached) fetchWithRetry(cl *call, schedule []time.Duration) (Token, error) {
	for attempt := 0; ; attempt++ {
		tok, err := c.attempt(attempt)
		if err == nil {
			return tok, nil
		}
		cl.last.Store(&err)
		if !IsTransient(err) || attempt >= len(schedule) {
			return Token{}, err
		}
		if !c.wait(schedule[attempt]) {
			return Token{}, ErrClosed
		}
	}
}

// wait sleeps d on the clock; false if the source closed meanwhile.
func (c *Cached) wait(d time.Duration) bool {
	ch := make(chan struct{})
	t := c.o.clock.AfterFunc(d, func() { close(ch) })
	select {
	case <-ch:
		return true
	case <-c.ctx.Done():
		t.Stop()
		return false
	}
}

// attempt makes one bounded call of the FetchFunc and validates the result.
func (c *Cached) attempt(n int) (Token, error) {
	ctx, cancel := c.ctx, context.CancelFunc(func() {})
	if c.o.AttemptTimeout > 0 {
		ctx, cancel = context.WithTimeout(c.ctx, c.o.AttemptTimeout)
	}
	defer cancel()
	ctx, span := c.tel.start(ctx, n)
	start := time.Now()
	tok, err := c.callFetch(ctx)
	if err == nil {
		err = c.validate(tok)
	}
	if err != nil {
		if c.ctx.Err() != nil {
			err = ErrClosed
		} else if ctx.Err() == context.DeadlineExceeded && !errors.Is(err, context.DeadlineExceeded) {
			// The SDK returns its last API error, not the deadline.
			err = fmt.Errorf("attempt timed out after %v: %w (last error: %w)", c.o.AttemptTimeout, context.DeadlineExceeded, err)
		}
		err = &Error{Op: "fetch", Kind: classify(err), Err: err}
	}
	c.tel.end(ctx, span, start, tok, err)
	return tok, err
}

// callFetch calls the FetchFunc, turning a panic into an error.
func (c *Cached) callFetch(ctx context.Context) (tok Token, err error) {
	defer func() {
		if r := recover(); r != nil {
			tok, err = Token{}, fmt.Errorf("tokensource: FetchFunc panicked: %v", r)
		}
	}()
	return c.fetch(ctx)
}

func (c *Cached) validate(tok Token) error {
	if tok.Value == "" {
		return &ValidationError{Field: "token", Reason: "is empty"}
	}
	if tok.Expiry.IsZero() {
		return &ValidationError{Field: "expiry", Reason: "is missing"}
	}
	if c.o.clock.Now().Add(c.o.SafetyMargin).After(tok.Expiry) {
		return &ValidationError{Field: "expiry", Reason: fmt.Sprintf("%s is not safely in the future", tok.Expiry.UTC().Format(time.RFC3339))}
	}
	return nil
}

// finish publishes the result of a fetch and schedules what comes next.
func (c *Cached) finish(cl *call, tok Token, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	// Waiters are released only after the outcome is published (the new
	// state or the remembered failure), so whoever returns with it sees a
	// consistent source.
	defer close(cl.done)
	cl.tok, cl.err = tok, err
	c.inflight = nil
	c.busy.Store(false)
	if c.closed.Load() {
		return
	}
	now := c.o.clock.Now()
	if err == nil {
		c.failures, c.lastErr = 0, nil
		c.failUntil.Store(0)
		st := c.stateFor(tok, now)
		c.cur.Store(st)
		c.o.Logger.Debug("tokensource: token refreshed", slog.Time("expiry", tok.Expiry), slog.String("mode", c.o.Mode.String()))
		if c.o.Mode == Eager {
			c.scheduleLocked(time.Duration(st.refreshAt - now.UnixNano()))
		}
		return
	}
	c.failures++
	backoff := c.backoff()
	if st := c.cur.Load(); st != nil && now.UnixNano() < st.usableUntil {
		// Never back off past the end of the cached token's usable life:
		// aim one floor before it, so a last attempt can succeed while
		// callers are still being served (retries stay a floor apart).
		target := time.Duration(st.usableUntil-now.UnixNano()) - c.o.BackgroundRetryMin
		backoff = min(backoff, max(target, c.o.BackgroundRetryMin))
	}
	c.lastErr = err
	c.failUntil.Store(now.Add(backoff).UnixNano())
	c.o.Logger.Warn("tokensource: token fetch failed", slog.String("error", err.Error()),
		slog.Bool("transient", IsTransient(err)), slog.Duration("retry_in", backoff), slog.String("mode", c.o.Mode.String()))
	if c.o.Mode == Eager {
		c.scheduleLocked(backoff)
	}
}

// stateFor computes the deadlines of a new token.
func (c *Cached) stateFor(tok Token, now time.Time) *state {
	exp := tok.Expiry.UnixNano()
	life := time.Duration(exp - now.UnixNano())
	early := max(c.o.EarlyRefresh, life/4)
	if early > life/2 { // a short token: refresh halfway, never immediately
		early = life / 2
	}
	usable := exp - int64(c.o.SafetyMargin)
	refresh := min(exp-int64(early), usable)
	return &state{tok: tok, refreshAt: refresh, usableUntil: usable}
}

// backoff is the jittered exponential delay after c.failures failures:
// between half and all of min·2^(n−1), capped, never below the floor.
func (c *Cached) backoff() time.Duration {
	d := c.o.BackgroundRetryMin
	for i := 1; i < c.failures && d < c.o.BackgroundRetryMax; i++ {
		d *= 2
	}
	d = min(d, c.o.BackgroundRetryMax)
	j := d/2 + time.Duration(rand.Int64N(int64(d/2)+1))
	return max(j, c.o.BackgroundRetryMin)
}

// scheduleLocked arms the background refresh timer (c.mu held).
func (c *Cached) scheduleLocked(d time.Duration) {
	if c.timer != nil {
		c.timer.Stop()
	}
	d = max(d, 0)
	c.timerGen++
	gen := c.timerGen
	c.timer = c.o.clock.AfterFunc(d, func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.closed.Load() || c.inflight != nil || gen != c.timerGen {
			return
		}
		c.timer = nil
		c.startLocked(c.now())
	})
}

// closeGrace bounds how long Close waits for a cancelled fetch to return.
const closeGrace = 2 * time.Second

// Close stops the background refresh, cancels a fetch in flight and waits
// for its goroutine to return. A FetchFunc that ignores its ctx cannot
// block Close: after a grace period (2 s) Close returns anyway and that
// goroutine ends whenever the FetchFunc does; callers waiting for it get
// ErrClosed at once. Close is idempotent; later calls of Token and Refresh
// fail with ErrClosed.
func (c *Cached) Close() error {
	if c.closed.Swap(true) {
		return nil
	}
	c.mu.Lock()
	if c.timer != nil {
		c.timer.Stop()
		c.timer = nil
	}
	c.cur.Store(nil) // the hit path checks nothing else
	c.mu.Unlock()
	c.cancel()
	done := make(chan struct{})
	go func() { c.wg.Wait(); close(done) }()
	t := time.NewTimer(closeGrace)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
	}
	return nil
}
