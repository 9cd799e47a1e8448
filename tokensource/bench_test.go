package tokensource_test

import (
	"context"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/lakebase-go/lakebase/tokensource"
)

func hitSource(b *testing.B) *tokensource.Cached {
	b.Helper()
	c := tokensource.New(func(context.Context) (tokensource.Token, error) {
		return tokensource.Token{Value: "bench-token", Expiry: time.Now().Add(time.Hour)}, nil
	}, tokensource.Options{Mode: tokensource.Lazy, Logger: quiet()})
	if _, err := c.Token(context.Background()); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = c.Close() })
	return c
}

// BenchmarkCachedTokenHit measures Cached.Token when a valid token is cached.
func BenchmarkCachedTokenHit(b *testing.B) {
	c := hitSource(b)
	ctx := context.Background()
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := c.Token(ctx); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := c.Token(ctx); err != nil {
					b.Fatal(err)
				}
			}
		})
	})
}

// BenchmarkOAuth2ReuseTokenSource is the obvious Go baseline over the same
// token.
func BenchmarkOAuth2ReuseTokenSource(b *testing.B) {
	ts := oauth2.ReuseTokenSource(nil, oauth2.StaticTokenSource(&oauth2.Token{AccessToken: "bench-token", Expiry: time.Now().Add(time.Hour)}))
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := ts.Token(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := ts.Token(); err != nil {
					b.Fatal(err)
				}
			}
		})
	})
}

var nowSink int64

// BenchmarkTimeNow is the floor of the hit path: one wall-clock read.
func BenchmarkTimeNow(b *testing.B) {
	for b.Loop() {
		nowSink += time.Now().UnixNano()
	}
}
