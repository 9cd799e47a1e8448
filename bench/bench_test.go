package bench

import (
	"bytes"
	"context"
	"database/sql"
	"math"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/oauth2"

	"github.com/lakebase-go/lakebase/internal/leaktest"
	"github.com/lakebase-go/lakebase/lakebasetest"
	"github.com/lakebase-go/lakebase/tokensource"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, leaktest.Options()...) }

// tiny sizes a comparison for the smoke test.
var tiny = Options{HitPairs: 6, HitIters: 1000, ConnectPairs: 6, QueryPairs: 6, QueryBatch: 2, Breakdown: 6,
	Churn: 10, Stampede: 30, Boundary: time.Second, Scaling: []int{10}, PoolPairs: 6, Wakes: 2,
	UserPairs: 6, NewUsers: 2, Refused: 5, Seed: 1}

// TestCompareSmoke runs the comparison at toy sizes so it cannot rot; it
// asserts the table's shape, that every paired row has an interval, and the
// call counts, never timings.
func TestCompareSmoke(t *testing.T) {
	var out bytes.Buffer
	rows, err := Compare(t.Context(), &out, tiny)
	if err != nil {
		t.Fatal(err)
	}
	table := out.String()
	for _, want := range []string{"1. token on cache hit", ConnectCase, "2b. what minting", "3. churn", "4a. SELECT 1", "4b. insert", "4c. tracing cost", "otelpgx",
		"5. stampede", "5b. eager", "7. scaling: 10", "8a. pgxpool", "8b. pgxpool", "9. first query after scale to zero",
		"10a. per user", "10b. per user", "10c. per user, login proof", "11. refused logins", "13a. read by key", "13b. new connection",
		string(Limit), string(MintPerConn), string(OAuth2Reuse), string(Lazy), string(EagerOTel), "median [95 % CI]"} {
		if !strings.Contains(table, want) {
			t.Errorf("table lacks %q", want)
		}
	}
	if strings.Contains(table, "not available") {
		t.Errorf("a case reports its feature missing:\n%s", table)
	}
	ratiosSeen := 0
	for _, r := range rows {
		if r.Est != nil {
			ratiosSeen++
			if r.Est.N != r.N || r.Est.Exact != (r.N >= 6) || !(r.Est.Lo <= r.Est.Median && r.Est.Median <= r.Est.Hi) {
				t.Errorf("%s / %s: estimate %+v with n=%d", r.Case, r.Contender, *r.Est, r.N)
			}
		}
		if strings.HasPrefix(r.Case, "5. stampede") && r.Contender == string(Lazy) && r.Note != "1 credential calls" {
			t.Errorf("lazy stampede: %s, want exactly 1 credential call", r.Note)
		}
		if strings.HasPrefix(r.Case, "3. churn") && r.Contender == string(Eager) && r.Note != "0 credential calls" {
			t.Errorf("eager churn within one token lifetime: %s, want 0 extra calls", r.Note)
		}
		if strings.HasPrefix(r.Case, "9. first query") && strings.Contains(r.Contender, "pgxpool") && !strings.HasSuffix(r.Note, " 0 credential calls") {
			t.Errorf("wake case, pgxpool path: %q, want it measured with 0 credential calls", r.Note)
		}
		if strings.HasPrefix(r.Case, "11. refused") && r.Contender == string(MintPerConn) && r.Value != "10 credential calls" {
			t.Errorf("mint per connection, 10 refused attempts: %s, want one call each", r.Value)
		}
	}
	if ratiosSeen < 10 {
		t.Errorf("%d rows with a ratio interval, want every paired case's", ratiosSeen)
	}
	t.Log("\n" + table)
}

// TestCompareCases runs only the selected cases.
func TestCompareCases(t *testing.T) {
	o := tiny
	o.Cases = []string{"4"}
	var out bytes.Buffer
	rows, err := Compare(t.Context(), &out, o)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rows {
		if r.Case != "" && !strings.HasPrefix(r.Case, "4") {
			t.Errorf("case %q ran, want only case 4", r.Case)
		}
	}
	if len(rows) != 6 {
		t.Errorf("%d rows, want 6 (4a and 4b, three contenders each)", len(rows))
	}
}

// TestMedianCI checks the order-statistic interval against known ranks.
func TestMedianCI(t *testing.T) {
	seq := func(n int) []float64 {
		xs := make([]float64, n)
		for i := range xs {
			xs[n-1-i] = float64(i + 1) // reversed: MedianCI must sort
		}
		return xs
	}
	for _, tc := range []struct {
		n           int
		lo, hi, med float64
		exact       bool
	}{
		{5, 1, 5, 3, false},       // too few for 95 %: min and max
		{6, 1, 6, 3.5, true},      // P(B ≤ 0) = 1/64 ≤ 2.5 %: min and max cover 96.9 %
		{10, 2, 9, 5.5, true},     // P(B ≤ 1) = 11/1024 ≤ 2.5 % < P(B ≤ 2) = 56/1024
		{11, 2, 10, 6, true},      // P(B ≤ 1) = 12/2048, P(B ≤ 2) = 67/2048
		{100, 40, 61, 50.5, true}, // P(B ≤ 39) = 1.8 %, P(B ≤ 40) = 2.8 %
	} {
		e := MedianCI(seq(tc.n))
		if e.Lo != tc.lo || e.Hi != tc.hi || e.Median != tc.med || e.Exact != tc.exact || e.N != tc.n {
			t.Errorf("n=%d: got %+v, want [%v, %v] median %v exact %v", tc.n, e, tc.lo, tc.hi, tc.med, tc.exact)
		}
	}
	if e := MedianCI(nil); e.N != 0 || e.Ratio() != "" {
		t.Errorf("empty sample: %+v", e)
	}
	e := Estimate{Median: 1.01, Lo: 0.99, Hi: 1.04, N: 50, Exact: true}
	if e.Verdict() != "within noise" || math.Abs(e.HalfWidth()-0.03/1.01) > 1e-9 {
		t.Errorf("verdict %q, half-width %v", e.Verdict(), e.HalfWidth())
	}
	if v := (Estimate{Median: 1.2, Lo: 1.1, Hi: 1.3, N: 50, Exact: true}).Verdict(); v != "slower" {
		t.Errorf("verdict %q, want slower", v)
	}
	if !e.Overlaps(Estimate{Lo: 1.04, Hi: 1.2}) || e.Overlaps(Estimate{Lo: 1.05, Hi: 1.2}) {
		t.Error("Overlaps")
	}
}

// The Go benchmarks are shaped for benchstat: one benchmark per case, one
// sub-benchmark per contender keyed "contender=…", so
//
//	go test -run '^$' -bench . -count 10 ./bench/ | tee new.txt
//	benchstat -col /contender new.txt
//
// prints the contenders of each case side by side with their intervals
// and the p-value of each difference from the first column.

// connectKinds are case 2's contenders, the limit first (benchstat's
// baseline column).
var connectKinds = []Kind{Limit, Eager, Lazy, OAuth2Reuse, MintPerConn}

// BenchmarkConnect opens one new physical connection per iteration. For
// mintperconn the iterations are paced (outside the timer) under the SDK's
// 15 requests/s, as case 2 of cmd/compare does; back to back, it would
// measure the SDK's rate limiter (case 2b).
func BenchmarkConnect(b *testing.B) {
	e := lakebasetest.Start(b)
	env := &Env{E: e}
	for _, k := range connectKinds {
		b.Run("contender="+Slug(k), func(b *testing.B) {
			c, closeFn, err := env.Connector(context.Background(), k)
			if err != nil {
				b.Fatal(err)
			}
			defer closeFn()
			ctx := context.Background()
			var last time.Time
			for b.Loop() {
				if k == MintPerConn {
					b.StopTimer()
					if wait := mintPace - time.Since(last); wait > 0 {
						time.Sleep(wait) // pacing, not synchronisation
					}
					last = time.Now()
					b.StartTimer()
				}
				conn, err := c.Connect(ctx)
				if err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				_ = conn.Close()
				b.StartTimer()
			}
		})
	}
}

// BenchmarkQuery runs SELECT 1 on an open pool of one connection.
func BenchmarkQuery(b *testing.B) {
	e := lakebasetest.Start(b)
	env := &Env{E: e}
	for _, k := range []Kind{Limit, Eager, EagerOTel} {
		b.Run("contender="+Slug(k), func(b *testing.B) {
			c, closeFn, err := env.Connector(context.Background(), k)
			if err != nil {
				b.Fatal(err)
			}
			defer closeFn()
			db := sql.OpenDB(c)
			defer db.Close()
			db.SetMaxOpenConns(1)
			if err := db.Ping(); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				var one int
				if err := db.QueryRow("SELECT 1").Scan(&one); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkTokenHit is the token cache hit path, serial and parallel,
// against oauth2.ReuseTokenSource (benchstat -col /contender puts them side
// by side per mode).
func BenchmarkTokenHit(b *testing.B) {
	c := tokensource.New(func(context.Context) (tokensource.Token, error) {
		return tokensource.Token{Value: "v", Expiry: time.Now().Add(time.Hour)}, nil
	}, tokensource.Options{Mode: tokensource.Lazy})
	defer c.Close()
	ctx := context.Background()
	if _, err := c.Token(ctx); err != nil {
		b.Fatal(err)
	}
	ts := oauth2.ReuseTokenSource(nil, oauth2.StaticTokenSource(&oauth2.Token{AccessToken: "v", Expiry: time.Now().Add(time.Hour)}))
	fs := []struct {
		name string
		f    func()
	}{
		{Slug(OAuth2Reuse), func() { _, _ = ts.Token() }},
		{"lakebase", func() { _, _ = c.Token(ctx) }},
	}
	for _, mode := range []string{"serial", "parallel"} {
		for _, f := range fs {
			b.Run("mode="+mode+"/contender="+f.name, func(b *testing.B) {
				b.ReportAllocs()
				if mode == "serial" {
					for b.Loop() {
						f.f()
					}
					return
				}
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						f.f()
					}
				})
			})
		}
	}
}
