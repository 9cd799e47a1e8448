// Package clocktest is a fake clock.Clock for deterministic tests:
// time moves only when the test says so.
package clocktest

import (
	"context"
	"sort"
	"sync"
	"time"

	"github.com/lakebase-go/lakebase/internal/clock"
	"github.com/lakebase-go/lakebase/tokensource"
)

// Clock is a fake clock. The zero value is not usable; call New.
type Clock struct {
	mu      sync.Mutex
	now     time.Time
	timers  []*timer
	changed chan struct{} // closed and replaced whenever a timer is added
}

type timer struct {
	c       *Clock
	at      time.Time
	f       func()
	stopped bool
	fired   bool
}

var _ clock.Clock = (*Clock)(nil)

// New returns a clock reading start.
func New(start time.Time) *Clock { return &Clock{now: start, changed: make(chan struct{})} }

// Now returns the fake time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// AfterFunc schedules f at Now()+d; it runs (in its own goroutine) when the
// clock is advanced past that point.
func (c *Clock) AfterFunc(d time.Duration, f func()) clock.Timer {
	c.mu.Lock()
	t := &timer{c: c, at: c.now.Add(d), f: f}
	c.timers = append(c.timers, t)
	close(c.changed)
	c.changed = make(chan struct{})
	c.mu.Unlock()
	return t
}

// BlockUntil waits until at least n timers are pending (not fired or
// stopped) or ctx is done, and reports whether they are.
func (c *Clock) BlockUntil(ctx context.Context, n int) bool {
	for {
		c.mu.Lock()
		pending := c.pendingLocked()
		ch := c.changed
		c.mu.Unlock()
		if pending >= n {
			return true
		}
		// Stop does not signal, so poll as well as wait for AfterFunc.
		t := time.NewTimer(time.Millisecond)
		select {
		case <-ch:
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return false
		}
		t.Stop()
	}
}

// Stop implements clock.Timer.
func (t *timer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	was := !t.stopped && !t.fired
	t.stopped = true
	return was
}

// Pending returns the number of timers not yet fired or stopped.
func (c *Clock) Pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.pendingLocked()
}

func (c *Clock) pendingLocked() int {
	n := 0
	for _, t := range c.timers {
		if !t.stopped && !t.fired {
			n++
		}
	}
	return n
}

// Next returns the time of the earliest pending timer.
func (c *Clock) Next() (time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var best time.Time
	ok := false
	for _, t := range c.timers {
		if !t.stopped && !t.fired && (!ok || t.at.Before(best)) {
			best, ok = t.at, true
		}
	}
	return best, ok
}

// Advance moves the clock forward by d, firing due timers in order.
func (c *Clock) Advance(d time.Duration) { c.Set(c.Now().Add(d)) }

// Set moves the clock to t (a jump, like a host waking from sleep) and
// fires every timer due by then, in order.
func (c *Clock) Set(t time.Time) {
	c.mu.Lock()
	c.now = t
	var due []*timer
	for _, tm := range c.timers {
		if !tm.stopped && !tm.fired && !tm.at.After(t) {
			tm.fired = true
			due = append(due, tm)
		}
	}
	kept := c.timers[:0]
	for _, tm := range c.timers {
		if !tm.stopped && !tm.fired {
			kept = append(kept, tm)
		}
	}
	c.timers = kept
	c.mu.Unlock()
	sort.Slice(due, func(i, j int) bool { return due[i].at.Before(due[j].at) })
	for _, tm := range due {
		go tm.f()
	}
}

// Options returns o running on the clock c (tokensource.Options has no
// exported clock: users never need one).
func Options(o tokensource.Options, c clock.Clock) tokensource.Options {
	clock.SetTokenOptions(&o, c)
	return o
}
