package connector

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/lakebase-go/lakebase/lakebasetest"
	"github.com/lakebase-go/lakebase/tokensource"
)

// The emulators with a hot standby the tests of this file share (a base
// backup costs about a second): one, unless a test failed it over, after
// which the next test gets a new one. TestMain closes them.
var standbys struct {
	mu  sync.Mutex
	all []*lakebasetest.Emulator
}

// withStandbys makes TestMain close the shared emulators before goleak
// checks for leaks.
type withStandbys struct{ m *testing.M }

func (w withStandbys) Run() int {
	code := w.m.Run()
	standbys.mu.Lock()
	defer standbys.mu.Unlock()
	for _, e := range standbys.all {
		if err := e.Close(); err != nil {
			fmt.Fprintln(os.Stderr, "close a shared emulator:", err)
			code = 1
		}
	}
	return code
}

// sharedStandby returns an emulator with a running, unpromoted standby,
// shared by the tests of this package.
func sharedStandby(t *testing.T) (*lakebasetest.Emulator, *lakebasetest.Standby) {
	t.Helper()
	standbys.mu.Lock()
	defer standbys.mu.Unlock()
	if n := len(standbys.all); n > 0 && standbys.all[n-1].ReadOnlyHost() != "" {
		e := standbys.all[n-1]
		return e, e.Standby()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	start := time.Now()
	e, err := lakebasetest.New(ctx, lakebasetest.WithStandby())
	if err != nil {
		if errors.Is(err, lakebasetest.ErrPostgresNotFound) && os.Getenv("LAKEBASE_TEST_REQUIRE_PG") != "1" {
			t.Skip(err.Error())
		}
		t.Fatal(err)
	}
	t.Logf("emulator with a standby started in %v", time.Since(start).Round(time.Millisecond))
	standbys.all = append(standbys.all, e)
	return e, e.Standby()
}

// replicaTable creates a table the service principal owns on the primary
// and returns its name.
func replicaTable(t *testing.T, e *lakebasetest.Emulator, name string) string {
	t.Helper()
	sp := e.ServicePrincipal()
	if err := e.AdminExec(t.Context(), fmt.Sprintf(`DROP TABLE IF EXISTS %[1]s; CREATE TABLE %[1]s (id bigint PRIMARY KEY, note text); GRANT ALL ON %[1]s TO %[2]q`, name, sp)); err != nil {
		t.Fatal(err)
	}
	return name
}

func isInRecovery(t *testing.T, db *sql.DB) bool {
	t.Helper()
	var r bool
	if err := db.QueryRowContext(t.Context(), "SELECT pg_is_in_recovery()").Scan(&r); err != nil {
		t.Fatal(err)
	}
	return r
}

func count(ctx context.Context, db *sql.DB, table string, id int64) (int, error) {
	var n int
	err := db.QueryRowContext(ctx, "SELECT count(*)::int FROM "+table+" WHERE id = $1", id).Scan(&n)
	return n, err
}

func want25006(t *testing.T, what string, err error) {
	t.Helper()
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "25006" {
		t.Errorf("%s: %v, want a *pgconn.PgError with SQLSTATE 25006", what, err)
	}
}

// TestReadOnlyConnectorReadsReplayedRows: a reader from Reader and one from
// New with ReadOnly both land on the standby (the endpoint's
// read_only_host), read the rows the writer committed once they are
// replayed, and refuse writes with 25006 on database/sql and pgxpool; the
// writer's reader mints no token of its own.
func TestReadOnlyConnectorReadsReplayedRows(t *testing.T) {
	e, s := sharedStandby(t)
	ctx := t.Context()
	table := replicaTable(t, e, "ro_rows")
	w := mustNew(t, baseConfig(t, e, nil))
	writer := OpenDB(w)
	defer writer.Close()
	if err := writer.PingContext(ctx); err != nil {
		t.Fatal(err)
	}
	calls := e.Calls(lakebasetest.RouteCredentials)
	r, err := w.Reader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	reader := OpenDB(r)
	defer reader.Close()

	cfg := baseConfig(t, e, nil)
	cfg.Host, cfg.ReadOnly = "", true
	own := mustNew(t, cfg)
	ownDB := OpenDB(own)
	defer ownDB.Close()

	for i := int64(1); i <= 3; i++ {
		if _, err := writer.ExecContext(ctx, "INSERT INTO "+table+" VALUES ($1, 'committed')", i); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.CatchUp(ctx); err != nil {
		t.Fatal(err)
	}
	for name, db := range map[string]*sql.DB{"Reader": reader, "New with ReadOnly": ownDB} {
		var n int
		if err := db.QueryRowContext(ctx, "SELECT count(*)::int FROM "+table).Scan(&n); err != nil || n != 3 {
			t.Errorf("%s: %d rows (%v), want the 3 committed", name, n, err)
		}
		if !isInRecovery(t, db) {
			t.Errorf("%s: not on the standby", name)
		}
		_, err := db.ExecContext(ctx, "INSERT INTO "+table+" VALUES (100, 'on the reader')")
		want25006(t, name+": a write", err)
	}
	if isInRecovery(t, writer) {
		t.Error("the writer is on the standby")
	}
	if r.Host() != s.Host() || own.Host() != s.Host() || w.Host() != e.Host() {
		t.Errorf("hosts: reader %s, ReadOnly %s, writer %s; want %s, %s, %s", r.Host(), own.Host(), w.Host(), s.Host(), s.Host(), e.Host())
	}
	if !r.Config().ReadOnly || w.Config().ReadOnly {
		t.Error("Config().ReadOnly does not tell the reader from the writer")
	}
	// The reader shares the writer's token cache: no credential call of
	// its own (the ReadOnly connector from New has one).
	if got := e.Calls(lakebasetest.RouteCredentials) - calls; got != 1 {
		t.Errorf("%d credential calls for the two readers, want 1 (only the one built by New)", got)
	}

	// pgxpool on the reader: the same session check, the same 25006.
	pc, err := r.PoolConfig()
	if err != nil {
		t.Fatal(err)
	}
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	var rec bool
	if err := pool.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&rec); err != nil || !rec {
		t.Errorf("pgxpool reader: in recovery %v, %v", rec, err)
	}
	_, err = pool.Exec(ctx, "INSERT INTO "+table+" VALUES (101, 'pool')")
	want25006(t, "pgxpool: a write", err)
}

// TestReaderOutlivesWriter: closing the writer first leaves the reader
// working (the shared token source and workspace client close with the
// last of them); closing both closes the token source.
func TestReaderOutlivesWriter(t *testing.T) {
	e, _ := sharedStandby(t)
	ctx := t.Context()
	w, err := New(ctx, baseConfig(t, e, nil))
	if err != nil {
		t.Fatal(err)
	}
	r, err := w.Reader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Reader(ctx); !errors.Is(err, tokensource.ErrClosed) {
		t.Errorf("Reader of a closed connector: %v, want ErrClosed", err)
	}
	reader := OpenDB(r)
	if err := reader.PingContext(ctx); err != nil {
		t.Fatalf("the reader after the writer closed: %v", err)
	}
	if _, err := r.TokenSource().Token(ctx); err != nil {
		t.Fatalf("the shared token source after the writer closed: %v", err)
	}
	if err := reader.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := r.TokenSource().Token(ctx); !errors.Is(err, tokensource.ErrClosed) {
		t.Errorf("the shared token source after both closed: %v, want ErrClosed", err)
	}
}

// TestReadOnlyReplayPaused: with replay paused a fresh write on the
// primary is not visible on the reader; after resume it is, soon.
func TestReadOnlyReplayPaused(t *testing.T) {
	e, s := sharedStandby(t)
	ctx := t.Context()
	table := replicaTable(t, e, "ro_lag")
	w := mustNew(t, baseConfig(t, e, nil))
	writer := OpenDB(w)
	defer writer.Close()
	r, err := w.Reader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	reader := OpenDB(r)
	defer reader.Close()
	if _, err := writer.ExecContext(ctx, "INSERT INTO "+table+" VALUES (1, 'before')"); err != nil {
		t.Fatal(err)
	}
	if err := s.CatchUp(ctx); err != nil {
		t.Fatal(err)
	}

	if err := s.PauseReplay(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.ResumeReplay(context.Background()) })
	if _, err := writer.ExecContext(ctx, "INSERT INTO "+table+" VALUES (2, 'while paused')"); err != nil {
		t.Fatal(err)
	}
	if n, err := count(ctx, writer, table, 2); err != nil || n != 1 {
		t.Fatalf("the writer reads its own write: %d, %v", n, err)
	}
	if n, err := count(ctx, reader, table, 2); err != nil || n != 0 {
		t.Fatalf("the reader sees a write made while replay is paused: %d, %v", n, err)
	}
	if n, err := count(ctx, reader, table, 1); err != nil || n != 1 {
		t.Fatalf("the reader lost the replayed row: %d, %v", n, err)
	}

	if err := s.ResumeReplay(ctx); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	errs, ok := pollUntil(t, 30*time.Second, func() error {
		n, err := count(ctx, reader, table, 2)
		if err == nil && n != 1 {
			err = errors.New("not replayed yet")
		}
		return err
	})
	if ok.IsZero() {
		t.Fatalf("the write never became visible after resume: %v", errs[len(errs)-1])
	}
	t.Logf("visible on the reader %v after resume (%d polls)", ok.Sub(start).Round(time.Millisecond), len(errs)+1)
}

// TestReadOnlyWithoutReadOnlyHost: an endpoint without readable
// secondaries makes a read-only Config fail at New with a *ConfigError
// naming ReadOnly (explicitly, from PGTARGETSESSIONATTRS, with PGHOST set
// to the primary, and through Reader); a ReadOnly connector with an
// explicit primary Host fails each connection with one on both paths.
func TestReadOnlyWithoutReadOnlyHost(t *testing.T) {
	e := lakebasetest.Start(t)
	ctx := t.Context()
	wantReadOnlyError := func(what string, err error) {
		t.Helper()
		var ce *ConfigError
		if !errors.As(err, &ce) || ce.Setting != readOnlySetting || !strings.Contains(err.Error(), "fix:") {
			t.Errorf("%s: %v, want a *ConfigError for %s with a fix", what, err, readOnlySetting)
		}
	}
	cfg := baseConfig(t, e, nil)
	cfg.Host, cfg.ReadOnly = "", true
	_, err := New(ctx, cfg)
	wantReadOnlyError("ReadOnly", err)
	if err != nil && !strings.Contains(err.Error(), "no read-only host") {
		t.Errorf("the error does not say what is missing: %v", err)
	}

	env := e.Env()
	env[EnvTargetSessionAttrs] = "read-only" // PGHOST is the primary, as in an App
	_, err = New(ctx, Config{WorkspaceConfig: e.WorkspaceConfig(), LookupEnv: envMap(env)})
	wantReadOnlyError("PGTARGETSESSIONATTRS=read-only with PGHOST", err)

	w := mustNew(t, baseConfig(t, e, nil))
	_, err = w.Reader(ctx)
	wantReadOnlyError("Reader", err)

	// An explicit primary host: New cannot tell, each login does.
	cfg = baseConfig(t, e, nil)
	cfg.ReadOnly = true
	c := mustNew(t, cfg)
	db := OpenDB(c)
	defer db.Close()
	wantReadOnlyError("a connection to the primary", db.PingContext(ctx))
	pc, err := c.PoolConfig()
	if err != nil {
		t.Fatal(err)
	}
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	wantReadOnlyError("pgxpool to the primary", pool.Ping(ctx))

	// The same host is fine for a session that is read-only by default.
	cfg.RuntimeParams = map[string]string{"default_transaction_read_only": "on"}
	ro := OpenDB(mustNew(t, cfg))
	defer ro.Close()
	if err := ro.PingContext(ctx); err != nil {
		t.Errorf("default_transaction_read_only session: %v", err)
	}
	_, err = ro.ExecContext(ctx, "CREATE TABLE ro_nope (id int)")
	want25006(t, "a write in a read-only session", err)
}

// TestReadOnlyTablesClaims: ReadOnlyTables mints credentials with the
// READ_ONLY claim on those tables; a connector without asks for none.
func TestReadOnlyTablesClaims(t *testing.T) {
	e := lakebasetest.Start(t)
	ctx := t.Context()
	plain := mustNew(t, baseConfig(t, e, nil))
	if _, err := plain.TokenSource().Token(ctx); err != nil {
		t.Fatal(err)
	}
	if n := e.ReadOnlyMints(); n != 0 {
		t.Fatalf("%d READ_ONLY mints without ReadOnlyTables", n)
	}
	cfg := baseConfig(t, e, nil)
	cfg.ReadOnlyTables = []string{"main.sales.orders", "main.sales.items"}
	c := mustNew(t, cfg)
	db := OpenDB(c)
	defer db.Close()
	if err := db.PingContext(ctx); err != nil {
		t.Fatal(err)
	}
	if n, tables := e.ReadOnlyMints(), e.LastReadOnlyTables(); n != 1 || strings.Join(tables, ",") != "main.sales.orders,main.sales.items" {
		t.Errorf("READ_ONLY mints %d with tables %v, want 1 with the two tables", n, tables)
	}
}

func TestReadOnlyEnvAndValidation(t *testing.T) {
	base := map[string]string{EnvEndpoint: "projects/p/branches/b/endpoints/e", EnvHost: "primary.example.com", EnvUser: "u"}
	for _, tc := range []struct {
		attrs    string
		readOnly bool
		host     string
		bad      bool
	}{
		{"", false, "primary.example.com", false},
		{"any", false, "primary.example.com", false},
		{"read-write", false, "primary.example.com", false},
		{"primary", false, "primary.example.com", false},
		{"read-only", true, "", false}, // PGHOST (the primary) is ignored: the read-only host is looked up
		{"standby", true, "", false},
		{"Read-Only", true, "", false},
		{"prefer-standby", false, "", true},
		{"prefer-primary", false, "", true},
	} {
		env := map[string]string{EnvTargetSessionAttrs: tc.attrs}
		for k, v := range base {
			env[k] = v
		}
		r, err := resolve(Config{LookupEnv: envMap(env)})
		if tc.bad {
			var ce *ConfigError
			if !errors.As(err, &ce) || ce.Setting != readOnlySetting || ce.Fix == "" {
				t.Errorf("%q: %v, want a *ConfigError for %s", tc.attrs, err, readOnlySetting)
			}
			continue
		}
		if err != nil || r.ReadOnly != tc.readOnly || r.Host != tc.host {
			t.Errorf("%q: ReadOnly %v host %q (%v), want %v %q", tc.attrs, r.ReadOnly, r.Host, err, tc.readOnly, tc.host)
		}
	}
	// An explicit Host stays; explicit ReadOnly wins over the environment.
	r, err := resolve(Config{Host: "ro.example.com", ReadOnly: true, LookupEnv: envMap(map[string]string{EnvEndpoint: base[EnvEndpoint], EnvTargetSessionAttrs: "read-write"})})
	if err != nil || r.Host != "ro.example.com" || !r.ReadOnly {
		t.Errorf("explicit Host and ReadOnly: %q %v %v", r.Host, r.ReadOnly, err)
	}
	for name, cfg := range map[string]Config{
		"ReadOnlyTables with Instance":    {Instance: "i", ReadOnlyTables: []string{"a.b.c"}},
		"ReadOnlyTables with Password":    {Endpoint: base[EnvEndpoint], Host: "h", Password: "pw", ReadOnlyTables: []string{"a.b.c"}},
		"ReadOnlyTables with a blank one": {Endpoint: base[EnvEndpoint], ReadOnlyTables: []string{" "}},
	} {
		cfg.LookupEnv = envMap(nil)
		var ce *ConfigError
		if err := cfg.Validate(); !errors.As(err, &ce) || ce.Setting != "ReadOnlyTables" {
			t.Errorf("%s: %v, want a *ConfigError for ReadOnlyTables", name, err)
		}
	}
	// Reader needs an endpoint or instance to look the host up from.
	c, err := New(context.Background(), Config{Host: "localhost", User: "u", Password: "pw", LookupEnv: envMap(nil)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var ce *ConfigError
	if _, err := c.Reader(context.Background()); !errors.As(err, &ce) || !strings.Contains(ce.Setting, "Endpoint") {
		t.Errorf("Reader without an endpoint: %v", err)
	}
}

// TestFailoverUnderInsertLoad: Failover() while 16 workers insert through
// one writer, with the credentials API failing throughout and the standby's
// replay paused (it lags): every acknowledged insert is on the new primary, connections attempted
// during the failover succeed within ConnectTimeout, every worker resumes,
// no credential call is made, and the reader, whose host now accepts
// writes, refuses new connections with a *ConfigError.
func TestFailoverUnderInsertLoad(t *testing.T) {
	e, s := sharedStandby(t)
	ctx := t.Context()
	table := replicaTable(t, e, "failover_t")
	logs := &syncBuffer{}
	cfg := baseConfig(t, e, logs)
	cfg.ConnectTimeout = 20 * time.Second
	w := mustNew(t, cfg)
	writer := OpenDB(w, WithMaxOpenConns(16), WithMaxIdleConns(16))
	defer writer.Close()
	r, err := w.Reader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	reader := OpenDB(r)
	defer reader.Close()
	if err := reader.PingContext(ctx); err != nil {
		t.Fatal(err)
	}
	sp := e.ServicePrincipal()
	if _, err := w.TokenSource().Token(ctx); err != nil {
		t.Fatal(err)
	}
	calls, rejects := e.Calls(lakebasetest.RouteCredentials), e.Rejects(sp)
	e.FailNext(lakebasetest.RouteCredentials, 1000, 500, "INTERNAL_ERROR")
	defer e.FailNext(lakebasetest.RouteCredentials, 0, 0, "")

	const workers = 16
	var (
		next     atomic.Int64
		failedOv atomic.Bool
		mu       sync.Mutex
		acked    = map[int64]bool{}
		failed   int
		lastErr  error
		after    [workers]int // acknowledged inserts after Failover returned
		stop     = make(chan struct{})
		wg       sync.WaitGroup
	)
	for i := 0; i < workers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				id := next.Add(1)
				_, err := writer.ExecContext(ctx, "INSERT INTO "+table+" VALUES ($1, 'load')", id)
				mu.Lock()
				if err == nil {
					acked[id] = true
					if failedOv.Load() {
						after[i]++
					}
				} else {
					failed++
					lastErr = err
				}
				mu.Unlock()
			}
		}()
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		if _, ok := pollUntil(t, 60*time.Second, func() error {
			mu.Lock()
			defer mu.Unlock()
			if !cond() {
				return errors.New(what)
			}
			return nil
		}); ok.IsZero() {
			close(stop)
			wg.Wait()
			t.Fatalf("timed out waiting for %s (%d failed inserts, last: %v)", what, failed, lastErr)
		}
	}
	waitFor("200 inserts before the failover", func() bool { return len(acked) >= 200 })
	// A lagging standby (a third fault): replay stops, inserts go on; the
	// promotion must replay what it has received first.
	if err := s.PauseReplay(ctx); err != nil {
		close(stop)
		wg.Wait()
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.ResumeReplay(context.Background()) }) // if the test ends before the failover
	mu.Lock()
	beforePause := len(acked)
	mu.Unlock()
	waitFor("100 inserts with replay paused", func() bool { return len(acked) >= beforePause+100 })

	// New connections attempted throughout the failover must succeed
	// (each within ConnectTimeout, or Connect fails).
	probeStop := make(chan struct{})
	var probeWG sync.WaitGroup
	var probes, probeErrs atomic.Int64
	var probeErr atomic.Value
	for range 4 {
		probeWG.Add(1)
		go func() {
			defer probeWG.Done()
			for {
				select {
				case <-probeStop:
					return
				default:
				}
				probes.Add(1)
				if err := connectOnce(ctx, w); err != nil {
					probeErrs.Add(1)
					probeErr.Store(err)
				}
			}
		}()
	}
	start := time.Now()
	if err := e.Failover(ctx); err != nil {
		close(stop)
		wg.Wait()
		t.Fatal(err)
	}
	failedOv.Store(true)
	t.Logf("Failover took %v", time.Since(start).Round(time.Millisecond))
	waitFor("every worker to insert again after the failover", func() bool {
		for _, n := range after {
			if n < 5 {
				return false
			}
		}
		return true
	})
	close(probeStop)
	probeWG.Wait()
	close(stop)
	wg.Wait()

	if n := probeErrs.Load(); n > 0 {
		t.Errorf("%d of %d new connections during the failover failed, last: %v", n, probes.Load(), probeErr.Load())
	}
	if !strings.Contains(logs.String(), "endpoint waking up, retrying") {
		t.Error("no new connection met the failover's outage (no cold-start retry logged)")
	}
	var onPrimary []int64
	rows, err := writer.QueryContext(ctx, "SELECT id FROM "+table)
	if err != nil {
		t.Fatal(err)
	}
	present := map[int64]bool{}
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		present[id] = true
		onPrimary = append(onPrimary, id)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	lost := 0
	for id := range acked {
		if !present[id] {
			lost++
		}
	}
	if lost > 0 {
		t.Errorf("%d of %d acknowledged inserts are missing on the new primary", lost, len(acked))
	}
	var addr string
	if err := writer.QueryRowContext(ctx, "SELECT host(inet_server_addr())").Scan(&addr); err != nil || addr != s.Host() || isInRecovery(t, writer) {
		t.Errorf("the writer reaches %q (%v), want the promoted standby %s", addr, err, s.Host())
	}
	if got := e.Calls(lakebasetest.RouteCredentials) - calls; got != 0 {
		t.Errorf("%d credential calls during the failover, want 0", got)
	}
	if got := e.Rejects(sp) - rejects; got != 0 {
		t.Errorf("%d refused logins during the failover, want 0", got)
	}
	t.Logf("%d acknowledged inserts (%d on the new primary), %d failed in flight; %d connections during the failover", len(acked), len(onPrimary), failed, probes.Load())

	// The reader's host is the promoted, writable server now.
	var ce *ConfigError
	reader.SetMaxIdleConns(0)
	if err := connectOnce(ctx, r); !errors.As(err, &ce) || ce.Setting != readOnlySetting {
		t.Errorf("a reader connection after the failover: %v, want a *ConfigError for %s", err, readOnlySetting)
	}
}
