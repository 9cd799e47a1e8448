package lakebasetest

import (
	"context"
	"testing"
	"time"
)

// BenchmarkStart measures New (PostgreSQL from the template, TLS material,
// auth server, fake API) followed by Close.
func BenchmarkStart(b *testing.B) {
	var startTotal time.Duration
	for b.Loop() {
		t0 := time.Now()
		e, err := New(context.Background())
		if err != nil {
			b.Fatal(err)
		}
		startTotal += time.Since(t0)
		b.StopTimer()
		_ = e.Close()
		b.StartTimer()
	}
	b.ReportMetric(float64(startTotal.Milliseconds())/float64(b.N), "ms/start")
}
