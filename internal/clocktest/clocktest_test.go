package clocktest_test

import (
	"context"
	"testing"
	"time"

	"github.com/lakebase-go/lakebase/internal/clocktest"
)

func TestAdvanceFiresDueTimersOnly(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	c := clocktest.New(start)
	fired := make(chan string, 3)
	c.AfterFunc(time.Minute, func() { fired <- "1m" })
	c.AfterFunc(time.Hour, func() { fired <- "1h" })
	stopped := c.AfterFunc(time.Second, func() { fired <- "stopped" })
	if !stopped.Stop() || stopped.Stop() {
		t.Fatal("Stop should report true once, then false")
	}
	if c.Pending() != 2 {
		t.Fatalf("pending = %d, want 2", c.Pending())
	}
	if next, ok := c.Next(); !ok || !next.Equal(start.Add(time.Minute)) {
		t.Fatalf("Next = %v %v", next, ok)
	}
	c.Advance(2 * time.Minute)
	if got := <-fired; got != "1m" {
		t.Fatalf("fired %q", got)
	}
	if c.Pending() != 1 || !c.Now().Equal(start.Add(2*time.Minute)) {
		t.Fatalf("pending %d now %v", c.Pending(), c.Now())
	}
	select {
	case got := <-fired:
		t.Fatalf("unexpected %q", got)
	default:
	}
}

func TestBlockUntil(t *testing.T) {
	c := clocktest.New(time.Now())
	go c.AfterFunc(time.Second, func() {})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if !c.BlockUntil(ctx, 1) {
		t.Fatal("BlockUntil did not see the timer")
	}
	short, cancel2 := context.WithCancel(context.Background())
	cancel2()
	if c.BlockUntil(short, 2) {
		t.Fatal("BlockUntil(2) reported true with one timer")
	}
}
