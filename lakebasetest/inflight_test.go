package lakebasetest

import (
	"sync"
	"testing"
	"time"

	"github.com/databricks/databricks-sdk-go/service/iam"
)

// TestInFlightPeak: calls held by latency are counted while they wait and
// not after their answer; ResetInFlightPeak starts over.
func TestInFlightPeak(t *testing.T) {
	e := Start(t)
	w, err := e.fullClient(spBearer(e))
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	if _, err := w.CurrentUser.Me(ctx, iam.MeRequest{}); err != nil {
		t.Fatal(err)
	}
	if got := e.InFlightPeak(RouteMe); got != 1 {
		t.Fatalf("peak after one call: %d, want 1", got)
	}
	e.SetLatency(RouteMe, 300*time.Millisecond)
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() {
			if _, err := w.CurrentUser.Me(ctx, iam.MeRequest{}); err != nil {
				t.Error(err)
			}
		})
	}
	// Wait until all three are being answered (polling with a deadline).
	deadline := time.Now().Add(10 * time.Second)
	for e.InFlightPeak(RouteMe) < 3 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	wg.Wait()
	if got := e.InFlightPeak(RouteMe); got != 3 {
		t.Errorf("peak of three concurrent calls: %d, want 3", got)
	}
	e.ResetInFlightPeak()
	if got := e.InFlightPeak(RouteMe); got != 0 {
		t.Errorf("peak after the reset with nothing in flight: %d, want 0", got)
	}
	e.SetLatency(RouteMe, 0)
	for range 3 { // sequential calls never overlap
		if _, err := w.CurrentUser.Me(ctx, iam.MeRequest{}); err != nil {
			t.Fatal(err)
		}
	}
	if got := e.InFlightPeak(RouteMe); got != 1 {
		t.Errorf("peak of sequential calls: %d, want 1", got)
	}
}
