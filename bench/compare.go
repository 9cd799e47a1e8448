package bench

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/lakebase-go/lakebase/lakebasetest"
	"github.com/lakebase-go/lakebase/tokensource"
)

// Options size a comparison run.
type Options struct {
	Rounds   int           // interleaved rounds per case (medians are over rounds)
	Connects int           // connections per round for the connect case
	Churn    int           // connections in the churn case
	Queries  int           // queries per round for the query case
	Stampede int           // goroutines in the stampede case
	Boundary time.Duration // length of each run of the refresh-boundary case
}

// Quick is small enough for a test.
var Quick = Options{Rounds: 3, Connects: 10, Churn: 40, Queries: 200, Stampede: 200, Boundary: 2 * time.Second}

// Full is what the README table comes from.
var Full = Options{Rounds: 7, Connects: 40, Churn: 2000, Queries: 2000, Stampede: 1000, Boundary: 8 * time.Second}

// Row is one line of the comparison table.
type Row struct {
	Case, Contender, Value, Ratio, Note string
}

// Compare runs every case interleaved on one emulator and writes a Markdown
// table to out.
func Compare(ctx context.Context, out io.Writer, o Options) ([]Row, error) {
	e, err := lakebasetest.New(ctx)
	if err != nil {
		return nil, err
	}
	defer e.Close()
	env := &Env{E: e}
	var rows []Row
	add := func(r ...Row) { rows = append(rows, r...) }

	// 1. Token on a cache hit.
	hit := hitCase()
	add(hit...)

	// 2. New physical connection.
	kinds := []Kind{Limit, Eager, Lazy, OAuth2Reuse, MintPerConn}
	conns := map[Kind]func(){}
	connectors := map[Kind]driver.Connector{}
	for _, k := range kinds {
		c, closeFn, err := env.Connector(ctx, k)
		if err != nil {
			return nil, fmt.Errorf("bench: %s: %w", k, err)
		}
		connectors[k] = c
		conns[k] = closeFn
	}
	defer func() {
		for _, f := range conns {
			f()
		}
	}()
	per := map[Kind][]time.Duration{}
	for r := 0; r < o.Rounds; r++ {
		for _, k := range kinds {
			lat, err := Connect(ctx, connectors[k], o.Connects)
			if err != nil {
				return nil, fmt.Errorf("bench: connect %s: %w", k, err)
			}
			per[k] = append(per[k], Median(lat))
		}
	}
	limit := Median(per[Limit])
	for _, k := range kinds {
		m := Median(per[k])
		add(Row{"2. new connection (TLS + login), median", string(k), m.Round(time.Microsecond).String(), ratio(m, limit), ""})
	}

	// 3. Churn with a 30 ms credential API.
	e.SetLatency(lakebasetest.RouteCredentials, 30*time.Millisecond)
	var churn [2]time.Duration
	var churnCalls [2]int64
	for i, k := range []Kind{Eager, MintPerConn} {
		e.ResetCalls()
		start := time.Now()
		if _, err := Connect(ctx, connectors[k], o.Churn); err != nil {
			return nil, err
		}
		churn[i] = time.Since(start)
		churnCalls[i] = e.Calls(lakebasetest.RouteCredentials)
	}
	e.SetLatency(lakebasetest.RouteCredentials, 0)
	add(Row{fmt.Sprintf("3. churn: %d new connections, API latency 30 ms", o.Churn), string(Eager), churn[0].Round(time.Millisecond).String(), ratio(churn[0], churn[1]), fmt.Sprintf("%d credential calls", churnCalls[0])},
		Row{"", string(MintPerConn), churn[1].Round(time.Millisecond).String(), "1.00", fmt.Sprintf("%d credential calls", churnCalls[1])})

	// 4. Query path on an open pool.
	qkinds := []Kind{Limit, Eager, EagerOTel}
	dbs := map[Kind]*sql.DB{}
	for _, k := range qkinds {
		c, closeFn, err := env.Connector(ctx, k)
		if err != nil {
			return nil, err
		}
		db := sql.OpenDB(c)
		db.SetMaxOpenConns(1)
		dbs[k] = db
		defer func() { _ = db.Close(); closeFn() }()
		if err := db.PingContext(ctx); err != nil {
			return nil, err
		}
	}
	if err := e.AdminExec(ctx, fmt.Sprintf(`CREATE TABLE IF NOT EXISTS bench_kv (k bigint PRIMARY KEY, v text); GRANT ALL ON bench_kv TO "%s"`, e.ServicePrincipal())); err != nil {
		return nil, err
	}
	q1, q2 := map[Kind][]time.Duration{}, map[Kind][]time.Duration{}
	key := int64(0)
	for r := 0; r < o.Rounds; r++ {
		for _, k := range qkinds {
			db := dbs[k]
			start := time.Now()
			for i := 0; i < o.Queries; i++ {
				var one int
				if err := db.QueryRowContext(ctx, "SELECT 1").Scan(&one); err != nil {
					return nil, err
				}
			}
			q1[k] = append(q1[k], time.Since(start)/time.Duration(o.Queries))
			start = time.Now()
			for i := 0; i < o.Queries/2; i++ {
				key++
				if _, err := db.ExecContext(ctx, "INSERT INTO bench_kv (k, v) VALUES ($1, $2)", key, "v"); err != nil {
					return nil, err
				}
				var v string
				if err := db.QueryRowContext(ctx, "SELECT v FROM bench_kv WHERE k = $1", key).Scan(&v); err != nil {
					return nil, err
				}
			}
			q2[k] = append(q2[k], time.Since(start)/time.Duration(o.Queries/2))
		}
	}
	for _, k := range qkinds {
		add(Row{"4a. SELECT 1 on an open pool, median", string(k), Median(q1[k]).Round(100 * time.Nanosecond).String(), ratio(Median(q1[k]), Median(q1[Limit])), ""})
	}
	for _, k := range qkinds {
		add(Row{"4b. insert + select by key, median", string(k), Median(q2[k]).Round(100 * time.Nanosecond).String(), ratio(Median(q2[k]), Median(q2[Limit])), ""})
	}

	// 5. Stampede: many goroutines need a connection when the cache is empty.
	for _, k := range []Kind{Lazy, MintPerConn} {
		c, closeFn, err := env.stampedeConnector(ctx, k)
		if err != nil {
			return nil, err
		}
		e.ResetCalls()
		waits, err := stampede(ctx, c, o.Stampede)
		closeFn()
		if err != nil {
			return nil, err
		}
		add(Row{fmt.Sprintf("5. stampede: %d goroutines, empty cache", o.Stampede), string(k), "p99 " + Quantile(waits, 0.99).Round(time.Millisecond).String(), "",
			fmt.Sprintf("%d credential calls", e.Calls(lakebasetest.RouteCredentials))})
	}

	// 5b. Eager mode across refresh boundaries: connect latency while the
	// token is refreshed (slow 300 ms API) vs the same load with no refresh.
	if o.Boundary > 0 {
		steady, crossing, calls, err := env.boundary(ctx, o.Boundary)
		if err != nil {
			return nil, err
		}
		add(Row{"5b. eager: p99 connect, 8 goroutines, 3 s tokens refreshed via a 300 ms API", "steady (no refresh)", "p99 " + steady.Round(100*time.Microsecond).String(), "1.00", ""},
			Row{"", "across refreshes", "p99 " + crossing.Round(100*time.Microsecond).String(), ratio(crossing, steady), fmt.Sprintf("%d refreshes during the run", calls)})
	}

	// 7. Scaling of credential calls with connections.
	for _, n := range []int{10, 100, 1000} {
		if n > o.Churn {
			break
		}
		var cells []string
		for _, k := range []Kind{Eager, MintPerConn} {
			e.ResetCalls()
			start := time.Now()
			if _, err := Connect(ctx, connectors[k], n); err != nil {
				return nil, err
			}
			cells = append(cells, fmt.Sprintf("%s: %d calls, %v", k, e.Calls(lakebasetest.RouteCredentials), time.Since(start).Round(time.Millisecond)))
		}
		add(Row{fmt.Sprintf("7. scaling: %d connections", n), "both", "", "", strings.Join(cells, "; ")})
	}

	writeTable(out, rows, o)
	return rows, nil
}

func ratio(v, base time.Duration) string {
	if base == 0 {
		return ""
	}
	return fmt.Sprintf("%.2f", float64(v)/float64(base))
}

// stampedeConnector is a fresh connector with an empty cache (Connector
// does not warm the lazy one).
func (env *Env) stampedeConnector(ctx context.Context, k Kind) (driver.Connector, func(), error) {
	return env.Connector(ctx, k)
}

// stampede releases n goroutines at once, each opening one connection, and
// returns their waits.
func stampede(ctx context.Context, c driver.Connector, n int) ([]time.Duration, error) {
	var wg sync.WaitGroup
	start := make(chan struct{})
	waits := make([]time.Duration, n)
	errs := make([]error, n)
	for i := 0; i < n; i++ {
		wg.Go(func() {
			<-start
			t := time.Now()
			conn, err := c.Connect(ctx)
			waits[i] = time.Since(t)
			if err != nil {
				errs[i] = err
				return
			}
			_ = conn.Close()
		})
	}
	close(start)
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	return waits, nil
}

// hitCase measures the token cache hit path with testing.Benchmark.
func hitCase() []Row {
	c := tokensource.New(func(context.Context) (tokensource.Token, error) {
		return tokensource.Token{Value: "v", Expiry: time.Now().Add(time.Hour)}, nil
	}, tokensource.Options{Mode: tokensource.Lazy})
	defer c.Close()
	ctx := context.Background()
	_, _ = c.Token(ctx)
	ts := oauth2.ReuseTokenSource(nil, oauth2.StaticTokenSource(&oauth2.Token{AccessToken: "v", Expiry: time.Now().Add(time.Hour)}))
	serial := func(f func()) testing.BenchmarkResult {
		return testing.Benchmark(func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				f()
			}
		})
	}
	parallel := func(f func()) testing.BenchmarkResult {
		return testing.Benchmark(func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					f()
				}
			})
		})
	}
	ours := func() { _, _ = c.Token(ctx) }
	theirs := func() { _, _ = ts.Token() }
	rs, rp, os, op := serial(ours), parallel(ours), serial(theirs), parallel(theirs)
	ns := func(r testing.BenchmarkResult) time.Duration { return time.Duration(r.NsPerOp()) }
	// Cost of the clock read alone: the hit path's floor on this machine.
	clk := serial(func() { _ = time.Now() })
	return []Row{
		{"1. token on cache hit (serial)", "lakebase Cached.Token", fmt.Sprintf("%d ns/op, %d allocs", rs.NsPerOp(), rs.AllocsPerOp()), ratio(ns(rs), ns(os)), fmt.Sprintf("time.Now() alone: %d ns", clk.NsPerOp())},
		{"", string(OAuth2Reuse), fmt.Sprintf("%d ns/op, %d allocs", os.NsPerOp(), os.AllocsPerOp()), "1.00", ""},
		{"1. token on cache hit (parallel)", "lakebase Cached.Token", fmt.Sprintf("%d ns/op, %d allocs", rp.NsPerOp(), rp.AllocsPerOp()), ratio(ns(rp), ns(op)), ""},
		{"", string(OAuth2Reuse), fmt.Sprintf("%d ns/op, %d allocs", op.NsPerOp(), op.AllocsPerOp()), "1.00", ""},
	}
}

func writeTable(out io.Writer, rows []Row, o Options) {
	host, _ := os.Hostname()
	fmt.Fprintf(out, "Machine: %s, %d CPUs (%s), %s %s/%s; rounds %d, interleaved.\n\n", cpuModel(), runtime.NumCPU(), host, runtime.Version(), runtime.GOOS, runtime.GOARCH, o.Rounds)
	fmt.Fprintln(out, "| case | contender | median | ratio | note |")
	fmt.Fprintln(out, "|---|---|---|---|---|")
	for _, r := range rows {
		fmt.Fprintf(out, "| %s | %s | %s | %s | %s |\n", r.Case, r.Contender, r.Value, r.Ratio, r.Note)
	}
}

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown CPU"
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "model name") {
			if i := strings.Index(line, ":"); i >= 0 {
				return strings.TrimSpace(line[i+1:])
			}
		}
	}
	return "unknown CPU"
}

// boundary measures p99 connect latency of 8 goroutines opening connections
// for d with an eager connector, first with tokens that outlive the run,
// then with 3 s tokens refreshed through a 300 ms API during the run.
func (env *Env) boundary(ctx context.Context, d time.Duration) (steady, crossing time.Duration, calls int64, err error) {
	e := env.E
	run := func(ttl time.Duration) (time.Duration, int64, error) {
		e.SetTTL(ttl)
		defer e.SetTTL(time.Hour)
		c, closeFn, err := env.connectorWith(ctx, tokensource.Options{EarlyRefresh: time.Second, SafetyMargin: 500 * time.Millisecond, BackgroundRetryMin: 100 * time.Millisecond})
		if err != nil {
			return 0, 0, err
		}
		defer closeFn()
		e.SetLatency(lakebasetest.RouteCredentials, 300*time.Millisecond)
		defer e.SetLatency(lakebasetest.RouteCredentials, 0)
		e.ResetCalls()
		var mu sync.Mutex
		var all []time.Duration
		var wg sync.WaitGroup
		var firstErr error
		stop := time.Now().Add(d)
		for g := 0; g < 8; g++ {
			wg.Go(func() {
				for time.Now().Before(stop) {
					lat, err := Connect(ctx, c, 1)
					mu.Lock()
					if err != nil && firstErr == nil {
						firstErr = err
					}
					all = append(all, lat...)
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		return Quantile(all, 0.99), e.Calls(lakebasetest.RouteCredentials), firstErr
	}
	if steady, _, err = run(time.Hour); err != nil {
		return
	}
	crossing, calls, err = run(3 * time.Second)
	return
}
