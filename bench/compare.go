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
	HitPairs     int // paired samples of the token hit path (each a loop of HitIters calls)
	HitIters     int
	ConnectPairs int // interleaved cycles of case 2: one new connection per contender per cycle
	QueryPairs   int // interleaved cycles of case 4: one batch of QueryBatch queries per contender
	QueryBatch   int
	Breakdown    int // samples of each part of case 2b (what minting per connection is made of)
	Churn        int // connections in the churn case
	Stampede     int // goroutines in the stampede case
	Boundary     time.Duration
	Scaling      []int // connection counts of the scaling case
	PoolPairs    int   // interleaved cycles of the pgxpool case
	Wakes        int   // scale-to-zero wake-ups in the wake case
	UserPairs    int   // interleaved cycles of returning users
	NewUsers     int   // new users per contender
	Refused      int   // refused login attempts, sequential and then concurrent
	ProxyPairs   int   // interleaved cycles of case 12 (lakebase proxy); 0: a smoke size
	CopyMB       int   // megabytes per COPY in case 12; 0: a smoke size
	// Cases, if not empty, selects the cases to run by number ("2", "2b",
	// "8", ...).
	Cases []string
	// Seed seeds the shuffling of contenders within each cycle.
	Seed uint64
}

// Quick is small enough for CI (about a minute on a 2-core machine).
var Quick = Options{HitPairs: 30, HitIters: 20000, ConnectPairs: 60, QueryPairs: 60, QueryBatch: 10, Breakdown: 10,
	Churn: 40, Stampede: 100, Boundary: 2 * time.Second, Scaling: []int{10}, PoolPairs: 40, Wakes: 6,
	UserPairs: 100, NewUsers: 6, Refused: 20, ProxyPairs: 60, CopyMB: 20, Seed: 1}

// Full is what the README table comes from.
var Full = Options{HitPairs: 200, HitIters: 50000, ConnectPairs: 1500, QueryPairs: 1000, QueryBatch: 10, Breakdown: 60,
	Churn: 1000, Stampede: 1000, Boundary: 8 * time.Second, Scaling: []int{10, 100, 1000}, PoolPairs: 600, Wakes: 30,
	UserPairs: 1000, NewUsers: 30, Refused: 20, ProxyPairs: 600, CopyMB: 100, Seed: 1}

// Row is one line of the comparison table.
type Row struct {
	Case, Contender, Value, Ratio, Note string
	N                                   int       // samples behind Value and Ratio (0: a single measurement)
	Est                                 *Estimate // the ratio's estimate, when it has one
}

func (o Options) runs(c string) bool {
	if len(o.Cases) == 0 {
		return true
	}
	for _, x := range o.Cases {
		if x == c {
			return true
		}
	}
	return false
}

// ConnectCase is the name of case 2 in the table (the case whose interval
// width the method is judged by).
const ConnectCase = "2. new connection (TLS + login)"

// Compare runs every case on one emulator, contenders interleaved, and
// writes a Markdown table to out.
func Compare(ctx context.Context, out io.Writer, o Options) ([]Row, error) {
	loadStart := loadAvg()
	e, err := lakebasetest.New(ctx)
	if err != nil {
		return nil, err
	}
	defer e.Close()
	env := &Env{E: e}
	var rows []Row
	add := func(r ...Row) { rows = append(rows, r...) }
	type step struct {
		id  string
		run func() ([]Row, error)
	}
	steps := []step{
		{"1", func() ([]Row, error) { return hitCase(ctx, o) }},
		{"2", func() ([]Row, error) { return env.connectCase(ctx, o) }},
		{"2b", func() ([]Row, error) { return env.breakdownCase(ctx, o) }},
		{"3", func() ([]Row, error) { return env.churnCase(ctx, o) }},
		{"4", func() ([]Row, error) { return env.queryCase(ctx, o) }},
		{"4c", func() ([]Row, error) { return env.telemetryCase(ctx, o) }},
		{"5", func() ([]Row, error) { return env.stampedeCase(ctx, o) }},
		{"5b", func() ([]Row, error) { return env.boundaryCase(ctx, o) }},
		{"7", func() ([]Row, error) { return env.scalingCase(ctx, o) }},
		{"8", func() ([]Row, error) { return env.poolCase(ctx, o) }},
		{"9", func() ([]Row, error) { return env.wakeCase(ctx, o) }},
		{"10", func() ([]Row, error) { return env.userCase(ctx, o) }},
		{"11", func() ([]Row, error) { return env.refusedCase(ctx, o) }},
		{"12", func() ([]Row, error) { return env.proxyCase(ctx, o) }},   // cases_proxy.go
		{"13", func() ([]Row, error) { return env.replicaCase(ctx, o) }}, // cases_replica.go
	}
	for _, s := range steps {
		if !o.runs(s.id) {
			continue
		}
		r, err := s.run()
		if err != nil {
			return rows, fmt.Errorf("bench: case %s: %w", s.id, err)
		}
		add(r...)
	}
	writeTable(out, rows, loadStart)
	return rows, nil
}

// notAvailable is the row of a case whose feature is missing.
func notAvailable(caseName string, err error) []Row {
	return []Row{{Case: caseName, Contender: "—", Value: "not available", Note: err.Error()}}
}

func ratio(v, base time.Duration) string {
	if base == 0 {
		return ""
	}
	return fmt.Sprintf("%.2f", float64(v)/float64(base))
}

// connectOp times one new physical connection through c (closing it is
// not timed).
func connectOp(c driver.Connector) op {
	return func(ctx context.Context) (time.Duration, error) {
		start := time.Now()
		conn, err := c.Connect(ctx)
		d := time.Since(start)
		if err != nil {
			return 0, err
		}
		_ = conn.Close()
		return d, nil
	}
}

// mintPace keeps one credential call per cycle under the SDK's default
// client-side rate limit (15 requests/s): a pool that opens connections
// at a sustainable rate. Case 2b shows what happens above it.
const mintPace = 70 * time.Millisecond

// connectCase is case 2: one new physical connection per contender per
// cycle, interleaved, ratios per cycle against the static-password limit.
func (env *Env) connectCase(ctx context.Context, o Options) ([]Row, error) {
	kinds := []Kind{Limit, Eager, Lazy, OAuth2Reuse, MintPerConn}
	var cs []contender
	for _, k := range kinds {
		c, closeFn, err := env.Connector(ctx, k)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", k, err)
		}
		defer closeFn()
		cs = append(cs, contender{string(k), connectOp(c)})
	}
	samples, err := paired(ctx, cs, o.ConnectPairs, 10, mintPace, o.Seed)
	if err != nil {
		return nil, err
	}
	return pairedRows(ConnectCase, cs, samples, time.Microsecond, 1, func(i int) string {
		if kinds[i] == MintPerConn {
			return "one credential call per connection, paced under the SDK's 15 requests/s"
		}
		return ""
	}), nil
}

// churnCase is case 3: many new connections with a 30 ms credential API.
func (env *Env) churnCase(ctx context.Context, o Options) ([]Row, error) {
	e := env.E
	e.SetLatency(lakebasetest.RouteCredentials, 30*time.Millisecond)
	defer e.SetLatency(lakebasetest.RouteCredentials, 0)
	var churn [2]time.Duration
	var churnCalls [2]int64
	for i, k := range []Kind{Eager, MintPerConn} {
		c, closeFn, err := env.Connector(ctx, k)
		if err != nil {
			return nil, err
		}
		e.ResetCalls()
		start := time.Now()
		_, err = Connect(ctx, c, o.Churn)
		churn[i] = time.Since(start)
		churnCalls[i] = e.Calls(lakebasetest.RouteCredentials)
		closeFn()
		if err != nil {
			return nil, err
		}
	}
	name := fmt.Sprintf("3. churn: %d new connections back to back, API latency 30 ms", o.Churn)
	return []Row{
		{Case: name, Contender: string(Eager), Value: churn[0].Round(time.Millisecond).String(), Ratio: ratio(churn[0], churn[1]), Note: fmt.Sprintf("%d credential calls", churnCalls[0])},
		{Case: "", Contender: string(MintPerConn), Value: churn[1].Round(time.Millisecond).String(), Ratio: "1 (baseline)",
			Note: fmt.Sprintf("%d credential calls, %v per connection (the SDK's 15 requests/s limiter)", churnCalls[1], (churn[1] / time.Duration(max(o.Churn, 1))).Round(100*time.Microsecond))},
	}, nil
}

// queryCase is case 4: queries on an open pool of one connection, batches
// interleaved across contenders.
func (env *Env) queryCase(ctx context.Context, o Options) ([]Row, error) {
	e := env.E
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
	var key int64
	var mu sync.Mutex
	nextKey := func() int64 { mu.Lock(); defer mu.Unlock(); key++; return key }
	sel := func(db *sql.DB) op { return selectOneBatch(o.QueryBatch, dbSelectOne(db)) }
	kv := func(db *sql.DB) op {
		return func(ctx context.Context) (time.Duration, error) {
			start := time.Now()
			for i := 0; i < o.QueryBatch; i++ {
				k := nextKey()
				if _, err := db.ExecContext(ctx, "INSERT INTO bench_kv (k, v) VALUES ($1, $2)", k, "v"); err != nil {
					return 0, err
				}
				var v string
				if err := db.QueryRowContext(ctx, "SELECT v FROM bench_kv WHERE k = $1", k).Scan(&v); err != nil {
					return 0, err
				}
			}
			return time.Since(start), nil
		}
	}
	var rows []Row
	for _, q := range []struct {
		name string
		mk   func(*sql.DB) op
	}{{"4a. SELECT 1 on an open pool, per query", sel}, {"4b. insert + select by key, per pair", kv}} {
		var cs []contender
		for _, k := range qkinds {
			cs = append(cs, contender{string(k), q.mk(dbs[k])})
		}
		samples, err := paired(ctx, cs, o.QueryPairs, 10, 0, o.Seed)
		if err != nil {
			return nil, err
		}
		rows = append(rows, pairedRows(q.name, cs, samples, 100*time.Nanosecond, o.QueryBatch, nil)...)
	}
	return rows, nil
}

// stampedeCase is case 5: many goroutines need a connection when the cache
// is empty.
func (env *Env) stampedeCase(ctx context.Context, o Options) ([]Row, error) {
	e := env.E
	var rows []Row
	for _, k := range []Kind{Lazy, MintPerConn} {
		c, closeFn, err := env.Connector(ctx, k) // a lazy connector starts cold
		if err != nil {
			return nil, err
		}
		e.ResetCalls()
		waits, err := stampede(ctx, c, o.Stampede)
		closeFn()
		if err != nil {
			return nil, err
		}
		rows = append(rows, Row{Case: fmt.Sprintf("5. stampede: %d goroutines, empty cache", o.Stampede), Contender: string(k),
			Value: "p99 " + Quantile(waits, 0.99).Round(time.Millisecond).String(), N: len(waits),
			Note: fmt.Sprintf("%d credential calls", e.Calls(lakebasetest.RouteCredentials))})
	}
	return rows, nil
}

// boundaryCase is case 5b: eager mode across refresh boundaries.
func (env *Env) boundaryCase(ctx context.Context, o Options) ([]Row, error) {
	if o.Boundary <= 0 {
		return nil, nil
	}
	steady, crossing, calls, err := env.boundary(ctx, o.Boundary)
	if err != nil {
		return nil, err
	}
	return []Row{
		{Case: "5b. eager: p99 connect, 8 goroutines, 3 s tokens refreshed via a 300 ms API", Contender: "steady (no refresh)", Value: "p99 " + steady.Round(100*time.Microsecond).String(), Ratio: "1 (baseline)"},
		{Case: "", Contender: "across refreshes", Value: "p99 " + crossing.Round(100*time.Microsecond).String(), Ratio: ratio(crossing, steady), Note: fmt.Sprintf("%d refreshes during the run", calls)},
	}, nil
}

// scalingCase is case 7: credential calls against connections.
func (env *Env) scalingCase(ctx context.Context, o Options) ([]Row, error) {
	e := env.E
	var rows []Row
	conns := map[Kind]driver.Connector{}
	for _, k := range []Kind{Eager, MintPerConn} {
		c, closeFn, err := env.Connector(ctx, k)
		if err != nil {
			return nil, err
		}
		defer closeFn()
		conns[k] = c
	}
	for _, n := range o.Scaling {
		var cells []string
		for _, k := range []Kind{Eager, MintPerConn} {
			e.ResetCalls()
			start := time.Now()
			if _, err := Connect(ctx, conns[k], n); err != nil {
				return nil, err
			}
			cells = append(cells, fmt.Sprintf("%s: %d calls, %v", k, e.Calls(lakebasetest.RouteCredentials), time.Since(start).Round(time.Millisecond)))
		}
		rows = append(rows, Row{Case: fmt.Sprintf("7. scaling: %d connections back to back", n), Contender: "both", Note: strings.Join(cells, "; ")})
	}
	return rows, nil
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

// hitCase is case 1: the token cache hit path against
// oauth2.ReuseTokenSource, serial and parallel, in paired samples.
func hitCase(ctx context.Context, o Options) ([]Row, error) {
	c := tokensource.New(func(context.Context) (tokensource.Token, error) {
		return tokensource.Token{Value: "v", Expiry: time.Now().Add(time.Hour)}, nil
	}, tokensource.Options{Mode: tokensource.Lazy})
	defer c.Close()
	if _, err := c.Token(ctx); err != nil {
		return nil, err
	}
	ts := oauth2.ReuseTokenSource(nil, oauth2.StaticTokenSource(&oauth2.Token{AccessToken: "v", Expiry: time.Now().Add(time.Hour)}))
	ours := func() { _, _ = c.Token(ctx) }
	theirs := func() { _, _ = ts.Token() }
	clock := func() { _ = time.Now() }
	var rows []Row
	for _, parallel := range []bool{false, true} {
		name, fs := "1. token on cache hit (serial), per call", []func(){theirs, ours, clock}
		names := []string{string(OAuth2Reuse), "lakebase Cached.Token", "time.Now() alone"}
		if parallel {
			name = fmt.Sprintf("1. token on cache hit (parallel, %d goroutines), per call", runtime.GOMAXPROCS(0))
			fs, names = fs[:2], names[:2]
		}
		var cs []contender
		for i, f := range fs {
			cs = append(cs, contender{names[i], loopOp(f, o.HitIters, parallel)})
		}
		samples, err := paired(ctx, cs, o.HitPairs, 3, 0, o.Seed)
		if err != nil {
			return nil, err
		}
		rows = append(rows, pairedRows(name, cs, samples, time.Nanosecond, o.HitIters, func(i int) string {
			return fmt.Sprintf("%.0f allocs/op", testing.AllocsPerRun(100, fs[i]))
		})...)
	}
	return rows, nil
}

// loopOp times iters calls of f, spread over GOMAXPROCS goroutines when
// parallel.
func loopOp(f func(), iters int, parallel bool) op {
	return func(context.Context) (time.Duration, error) {
		start := time.Now()
		if !parallel {
			for range iters {
				f()
			}
			return time.Since(start), nil
		}
		p := runtime.GOMAXPROCS(0)
		var wg sync.WaitGroup
		for range p {
			wg.Go(func() {
				for range iters / p {
					f()
				}
			})
		}
		wg.Wait()
		return time.Since(start), nil
	}
}

func writeTable(out io.Writer, rows []Row, loadStart string) {
	host, _ := os.Hostname()
	fmt.Fprintf(out, "Machine: %s, %d CPUs (%s), %s %s/%s; load average (1, 5, 15 min) %s at the start, %s at the end.\n",
		cpuModel(), runtime.NumCPU(), host, runtime.Version(), runtime.GOOS, runtime.GOARCH, loadStart, loadAvg())
	fmt.Fprintln(out, "Paired, interleaved: each cycle runs every contender once in a shuffled order; a ratio is the median of the per-cycle ratios to the baseline, with its 95 % interval (order statistics, as benchstat); \"within noise\" when the interval contains 1.")
	fmt.Fprintln(out)
	fmt.Fprintln(out, "| case | contender | median [95 % CI] | ratio [95 % CI] | n | note |")
	fmt.Fprintln(out, "|---|---|---|---|---|---|")
	for _, r := range rows {
		n := ""
		if r.N > 0 {
			n = fmt.Sprint(r.N)
		}
		fmt.Fprintf(out, "| %s | %s | %s | %s | %s | %s |\n", r.Case, r.Contender, r.Value, r.Ratio, n, r.Note)
	}
	if w := widest(rows, ConnectCase); w > 0 {
		fmt.Fprintf(out, "\nCase 2's widest ratio interval: ±%.1f %%.\n", 100*w)
	}
}

// widest returns the largest relative half-width of the ratio intervals
// of the named case.
func widest(rows []Row, caseName string) float64 {
	w := 0.0
	for _, r := range rows {
		if r.Case == caseName && r.Est != nil {
			w = max(w, r.Est.HalfWidth())
		}
	}
	return w
}

// loadAvg reads the 1, 5 and 15 minute load averages.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
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
