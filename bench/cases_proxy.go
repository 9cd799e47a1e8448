package bench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/lakebase-go/lakebase/internal/proxy"
)

// Sizes of case 12 when Options leave them zero (a smoke run).
const (
	defaultProxyPairs   = 6
	defaultCopyMB       = 4
	defaultIdleSessions = 50
	copyRowBytes        = 100 // bytes per COPY row, newline included
)

func (o Options) proxyPairs() int {
	if o.ProxyPairs > 0 {
		return o.ProxyPairs
	}
	return defaultProxyPairs
}

func (o Options) copyMB() int {
	if o.CopyMB > 0 {
		return o.CopyMB
	}
	return defaultCopyMB
}

// proxyCase is case 12: the local auth proxy of `lakebase proxy`
// (internal/proxy, in this process) against pgx connecting directly to the
// emulator with a token in hand.
//
//   - 12a SELECT 1 on an open connection, per query (target ≤ 1.25×);
//   - 12b a new client connection: through the proxy (plaintext on
//     loopback, then the proxy's TLS + token login through the connector)
//     against a direct TLS + token login (target ≤ 1.10×);
//     both through the proxy's TCP address and its Unix socket;
//   - 12c/12d COPY of CopyMB megabytes in and out, per copy (target:
//     throughput ≥ 0.9×, a duration ratio ≤ 1.11×);
//   - 12e memory per idle proxied session beyond the backend connection's
//     own (target ≤ 64 KiB).
func (env *Env) proxyCase(ctx context.Context, o Options) ([]Row, error) {
	e := env.E
	cfg, err := env.connectorConfig()
	if err != nil {
		return nil, err
	}
	quiet := slog.New(slog.DiscardHandler)
	cfg.Logger = quiet
	idle := defaultIdleSessions
	if o.CopyMB >= 100 {
		idle = 200
	}
	sockDir, err := os.MkdirTemp("", "lakebase-bench-sock-*")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(sockDir)
	srv, err := proxy.New(ctx, proxy.Config{Connector: cfg, Listen: []string{"127.0.0.1:0"}, UnixSocketDir: sockDir, Logger: quiet, MaxConnections: idle + 50})
	if err != nil {
		return nil, fmt.Errorf("proxy.New: %w", err)
	}
	runCtx, stop := context.WithCancel(ctx)
	ran := make(chan error, 1)
	go func() { ran <- srv.Run(runCtx) }()
	defer func() { stop(); <-ran }()
	if _, err := srv.Connector().TokenSource().Token(ctx); err != nil {
		return nil, err
	}
	port := srv.Addrs()[0].(*net.TCPAddr).Port

	direct, err := env.baseConn()
	if err != nil {
		return nil, err
	}
	direct.Password = e.MintToken(e.ServicePrincipal(), 24*time.Hour)
	via, err := pgx.ParseConfig(fmt.Sprintf("host=127.0.0.1 port=%d user=%s dbname=%s sslmode=disable", port, e.ServicePrincipal(), e.Database()))
	if err != nil {
		return nil, err
	}
	viaSocket, err := pgx.ParseConfig(fmt.Sprintf("host=%s port=%d user=%s dbname=%s sslmode=disable", sockDir, port, e.ServicePrincipal(), e.Database()))
	if err != nil {
		return nil, err
	}
	names := []string{"pgx direct to the endpoint, token in hand (the baseline)", "pgx through lakebase proxy (TCP on loopback)", "pgx through lakebase proxy (its Unix socket)"}
	cfgs := []*pgx.ConnConfig{direct, via, viaSocket}
	pairs := o.proxyPairs()
	var rows []Row

	// 12a: SELECT 1 on an open connection.
	var conns []*pgx.Conn
	defer func() {
		for _, c := range conns {
			_ = c.Close(context.Background())
		}
	}()
	for _, c := range cfgs {
		conn, err := pgx.ConnectConfig(ctx, c)
		if err != nil {
			return nil, err
		}
		conns = append(conns, conn)
	}
	batch := max(o.QueryBatch, 1)
	var cs []contender
	for i, conn := range conns {
		cs = append(cs, contender{names[i], func(ctx context.Context) (time.Duration, error) {
			start := time.Now()
			for range batch {
				var one int
				if err := conn.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil {
					return 0, err
				}
			}
			return time.Since(start), nil
		}})
	}
	samples, err := paired(ctx, cs, pairs, 5, 0, o.Seed)
	if err != nil {
		return nil, err
	}
	rows = append(rows, pairedRows("12a. lakebase proxy: SELECT 1 on an open connection, per query (target ≤ 1.25×)", cs, samples, 100*time.Nanosecond, batch, targetNote(1.25))...)

	// 12b: a new connection.
	cs = cs[:0]
	for i, c := range cfgs {
		cs = append(cs, contender{names[i], func(ctx context.Context) (time.Duration, error) {
			start := time.Now()
			conn, err := pgx.ConnectConfig(ctx, c)
			d := time.Since(start)
			if err != nil {
				return 0, err
			}
			_ = conn.Close(ctx)
			return d, nil
		}})
	}
	if samples, err = paired(ctx, cs, pairs, 5, 0, o.Seed); err != nil {
		return nil, err
	}
	rows = append(rows, pairedRows("12b. lakebase proxy: new client connection (target ≤ 1.10×)", cs, samples, time.Microsecond, 1, targetNote(1.10))...)

	// 12c, 12d: COPY in and out.
	if err := e.AdminExec(ctx, fmt.Sprintf(`DROP TABLE IF EXISTS bench_copy; CREATE UNLOGGED TABLE bench_copy (id bigint, v text); GRANT ALL ON bench_copy TO "%s"`, e.ServicePrincipal())); err != nil {
		return nil, err
	}
	mb := o.copyMB()
	size := int64(mb) << 20
	copyPairs := max(min(pairs, 10), 3)
	if mb >= 100 {
		copyPairs = max(min(pairs/20, 20), 5)
	}
	cs = cs[:0]
	for i, conn := range conns[:2] {
		cs = append(cs, contender{names[i], func(ctx context.Context) (time.Duration, error) {
			if _, err := conn.Exec(ctx, "TRUNCATE bench_copy"); err != nil {
				return 0, err
			}
			start := time.Now()
			tag, err := conn.PgConn().CopyFrom(ctx, &rowSource{left: size / copyRowBytes}, "COPY bench_copy FROM STDIN")
			d := time.Since(start)
			if err == nil && tag.RowsAffected() != size/copyRowBytes {
				err = fmt.Errorf("COPY in: %d rows, want %d", tag.RowsAffected(), size/copyRowBytes)
			}
			return d, err
		}})
	}
	if samples, err = paired(ctx, cs, copyPairs, 1, 0, o.Seed); err != nil {
		return nil, err
	}
	rows = append(rows, pairedRows(fmt.Sprintf("12c. lakebase proxy: COPY %d MB in (FROM STDIN), per copy (target: throughput ≥ 0.9×)", mb), cs, samples, time.Millisecond, 1, throughputNote(samples, size))...)
	cs = cs[:0]
	out := fmt.Sprintf("COPY (SELECT g, repeat('x', %d) FROM generate_series(1, %d) g) TO STDOUT", copyRowBytes-12, size/copyRowBytes)
	for i, conn := range conns[:2] {
		cs = append(cs, contender{names[i], func(ctx context.Context) (time.Duration, error) {
			start := time.Now()
			_, err := conn.PgConn().CopyTo(ctx, io.Discard, out)
			return time.Since(start), err
		}})
	}
	if samples, err = paired(ctx, cs, copyPairs, 1, 0, o.Seed); err != nil {
		return nil, err
	}
	rows = append(rows, pairedRows(fmt.Sprintf("12d. lakebase proxy: COPY about %d MB out (TO STDOUT), per copy (target: throughput ≥ 0.9×)", mb), cs, samples, time.Millisecond, 1, throughputNote(samples, size))...)
	_ = e.AdminExec(ctx, "DROP TABLE IF EXISTS bench_copy")

	// 12e: memory per idle session.
	mem, err := idleMemory(ctx, srv, port, e.ServicePrincipal(), e.Database(), idle)
	if err != nil {
		return nil, err
	}
	return append(rows, mem), nil
}

// targetNote marks the proxy row with whether the ratio meets target.
func targetNote(target float64) func(int) string {
	return func(i int) string {
		if i == 0 {
			return ""
		}
		return fmt.Sprintf("target ≤ %.2f×", target)
	}
}

// throughputNote gives each contender's throughput and the proxy's
// throughput ratio (the inverse of the duration ratio).
func throughputNote(samples [][]time.Duration, size int64) func(int) string {
	return func(i int) string {
		med := MedianCI(floats(samples[i], 1)).Median
		mbs := float64(size) / (1 << 20) / (med / float64(time.Second))
		if i == 0 {
			return fmt.Sprintf("%.0f MB/s", mbs)
		}
		r := MedianCI(ratios(samples[i], samples[0]))
		verdict := "met"
		if 1/r.Median < 0.9 {
			verdict = "NOT met"
		}
		return fmt.Sprintf("%.0f MB/s; throughput %.2f× [%.2f–%.2f] of direct: target ≥ 0.9×: %s", mbs, 1/r.Median, 1/r.Hi, 1/r.Lo, verdict)
	}
}

// rowSource yields left COPY text rows of copyRowBytes bytes each.
type rowSource struct {
	left int64
	id   int64
	buf  []byte
}

func (r *rowSource) Read(p []byte) (int, error) {
	n := 0
	for r.left > 0 && len(p)-n >= copyRowBytes {
		r.id++
		r.buf = strconv.AppendInt(r.buf[:0], r.id, 10)
		r.buf = append(r.buf, '\t')
		for len(r.buf) < copyRowBytes-1 {
			r.buf = append(r.buf, 'x')
		}
		r.buf = append(r.buf, '\n')
		n += copy(p[n:], r.buf)
		r.left--
	}
	if n == 0 && r.left <= 0 {
		return 0, io.EOF
	}
	return n, nil
}

// heapAndStacks is the memory the Go runtime has in use for objects and
// goroutine stacks, after two collections.
func heapAndStacks() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc + m.StackInuse
}

// idleMemory measures what an idle proxied session costs the proxy beyond
// the backend connection itself: n backend connections taken over from
// pgx (what the proxy holds per session: the TLS connection and its
// buffers) against n idle sessions through the proxy with minimal clients
// (a TCP connection each, whose own few hundred bytes are counted against
// the proxy).
func idleMemory(ctx context.Context, srv *proxy.Server, port int, role, db string, n int) (Row, error) {
	name := fmt.Sprintf("12e. lakebase proxy: memory per idle session, %d sessions", n)
	c := srv.Connector()
	before := heapAndStacks()
	var held []net.Conn
	for range n {
		dc, err := c.Connect(ctx)
		if err != nil {
			return Row{}, err
		}
		pc, err := rawPgConn(dc)
		if err != nil {
			return Row{}, err
		}
		hc, err := pc.Hijack()
		if err != nil {
			return Row{}, err
		}
		held = append(held, hc.Conn)
	}
	backendOnly := heapAndStacks() - before
	for _, h := range held {
		_ = h.Close()
	}
	held = nil
	runtime.KeepAlive(held)

	before = heapAndStacks()
	already := srv.Stats().Open
	var clients []net.Conn
	defer func() {
		for _, cl := range clients {
			_ = cl.Close()
		}
	}()
	startup := &pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersion30, Parameters: map[string]string{"user": role, "database": db}}
	msg, err := startup.Encode(nil)
	if err != nil {
		return Row{}, err
	}
	for range n {
		cl, err := (&net.Dialer{}).DialContext(ctx, "tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err != nil {
			return Row{}, err
		}
		clients = append(clients, cl)
		if _, err := cl.Write(msg); err != nil {
			return Row{}, err
		}
		if err := untilReady(cl); err != nil {
			return Row{}, err
		}
	}
	if open := srv.Stats().Open - already; open != int64(n) {
		return Row{}, fmt.Errorf("%d idle sessions open, want %d", open, n)
	}
	proxied := heapAndStacks() - before
	per := (float64(proxied) - float64(backendOnly)) / float64(n)
	verdict := "met"
	if per > 64<<10 {
		verdict = "NOT met"
	}
	return Row{Case: name, Contender: "lakebase proxy", Value: fmt.Sprintf("%.1f KiB per session beyond the backend connection", per/1024),
		Note: fmt.Sprintf("target ≤ 64 KiB: %s; the backend connection itself (TLS conn and buffers): %.1f KiB; a whole proxied session: %.1f KiB (Go heap + stacks after GC)",
			verdict, float64(backendOnly)/float64(n)/1024, float64(proxied)/float64(n)/1024)}, nil
}

// untilReady reads backend messages until ReadyForQuery, with a fresh
// frontend that is dropped afterwards (so its buffers are not counted).
func untilReady(c net.Conn) error {
	fe := pgproto3.NewFrontend(c, io.Discard)
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	defer func() { _ = c.SetReadDeadline(time.Time{}) }()
	for {
		m, err := fe.Receive()
		if err != nil {
			return err
		}
		switch m := m.(type) {
		case *pgproto3.ReadyForQuery:
			return nil
		case *pgproto3.ErrorResponse:
			return fmt.Errorf("proxy refused the session: %s %s", m.Code, m.Message)
		}
	}
}

// rawPgConn finds the pgx connection under a driver connection.
func rawPgConn(dc any) (*pgconn.PgConn, error) {
	type pgxConn interface{ Conn() *pgx.Conn }
	if c, ok := dc.(pgxConn); ok {
		return c.Conn().PgConn(), nil
	}
	return nil, fmt.Errorf("bench: the connector returned a %T", dc)
}
