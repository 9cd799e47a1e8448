package proxy

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgconn/ctxwatch"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/lakebase-go/lakebase/lakebasetest"
	"github.com/lakebase-go/lakebase/tokensource"
)

// TestClients runs pgx and database/sql clients through one proxy.
func TestClients(t *testing.T) {
	e := lakebasetest.Start(t)
	h := startProxy(t, e, func(c *Config) { c.MaxConnections = 250 })
	role := h.role()

	// sleepCancelled runs pg_sleep(30) on conn and cancels its ctx once the
	// query is running; it returns how long the query took to give up.
	sleepCancelled := func(t *testing.T, run func(ctx context.Context) error) time.Duration {
		t.Helper()
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		errc := make(chan error, 1)
		go func() { errc <- run(ctx) }()
		eventually(t, 10*time.Second, "pg_sleep running", func() bool { return backends(t, e, role, "select pg_sleep") == 1 })
		start := time.Now()
		cancel()
		select {
		case err := <-errc:
			if err == nil {
				t.Fatal("pg_sleep(30) returned without an error after its ctx was cancelled")
			}
		case <-time.After(10 * time.Second):
			t.Fatal("pg_sleep(30) still running 10 s after its ctx was cancelled")
		}
		d := time.Since(start)
		eventually(t, 5*time.Second, "the backend query is gone", func() bool { return backends(t, e, role, "select pg_sleep") == 0 })
		return d
	}

	t.Run("pgx ctx cancel, default handler (connection closed)", func(t *testing.T) {
		c := h.mustConnect(t.Context())
		d := sleepCancelled(t, func(ctx context.Context) error {
			_, err := c.Exec(ctx, "select pg_sleep(30)")
			return err
		})
		if d > time.Second {
			t.Errorf("returned %v after the cancel, want within 1 s", d)
		}
	})

	t.Run("pgx ctx cancel via CancelRequest (mapped key)", func(t *testing.T) {
		cfg, err := pgx.ParseConfig(h.dsn(""))
		if err != nil {
			t.Fatal(err)
		}
		cfg.BuildContextWatcherHandler = func(pc *pgconn.PgConn) ctxwatch.Handler {
			return &pgconn.CancelRequestContextWatcherHandler{Conn: pc, CancelRequestDelay: 0, DeadlineDelay: 5 * time.Second}
		}
		c, err := pgx.ConnectConfig(t.Context(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close(context.Background())
		var qerr error
		d := sleepCancelled(t, func(ctx context.Context) error {
			_, qerr = c.Exec(ctx, "select pg_sleep(30)")
			return qerr
		})
		if d > time.Second {
			t.Errorf("returned %v after the cancel, want within 1 s", d)
		}
		if code := pgCode(qerr); code != "57014" {
			t.Errorf("cancelled query: %v, want SQLSTATE 57014 (the server cancelled it)", qerr)
		}
		// The session survived: the cancel went to its backend, not to the connection.
		var one int
		if err := c.QueryRow(t.Context(), "select 1").Scan(&one); err != nil {
			t.Errorf("the session after a cancel request: %v", err)
		}
	})

	t.Run("database/sql ctx cancel", func(t *testing.T) {
		db, err := sql.Open("pgx", h.dsn(""))
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		if err := db.PingContext(t.Context()); err != nil {
			t.Fatal(err)
		}
		d := sleepCancelled(t, func(ctx context.Context) error {
			_, err := db.ExecContext(ctx, "select pg_sleep(30)")
			return err
		})
		if d > time.Second {
			t.Errorf("returned %v after the cancel, want within 1 s", d)
		}
		var one int
		if err := db.QueryRowContext(t.Context(), "select 1").Scan(&one); err != nil {
			t.Errorf("the pool after a cancelled query: %v", err)
		}
	})

	t.Run("200 concurrent clients", func(t *testing.T) {
		const n = 200
		var wg sync.WaitGroup
		errs := make(chan error, n)
		start := make(chan struct{})
		for i := range n {
			wg.Go(func() {
				<-start
				ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
				defer cancel()
				c, err := h.connect(ctx, "")
				if err != nil {
					errs <- fmt.Errorf("client %d: connect: %w", i, err)
					return
				}
				defer c.Close(context.Background())
				for j := range 3 {
					var got int
					if err := c.QueryRow(ctx, "select $1::int + $2::int", i, j).Scan(&got); err != nil || got != i+j {
						errs <- fmt.Errorf("client %d query %d: %d, %v", i, j, got, err)
						return
					}
				}
			})
		}
		close(start)
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		eventually(t, 10*time.Second, "all backends closed", func() bool { return backends(t, e, role, "") == 0 })
	})

	t.Run("client vanishes mid-query", func(t *testing.T) {
		// psql killed with SIGKILL: no Terminate, no cancel request of its
		// own (pgx, for one, sends a cancel request when its connection
		// breaks, which would hide what this tests).
		cmd := exec.Command(pgBin(t, "psql"), "-X", "-h", "127.0.0.1", "-p", fmt.Sprint(h.port), "-U", role, "-d", e.Database(), "-c", "select pg_sleep(30)")
		cmd.Env = clientEnv()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		eventually(t, 10*time.Second, "pg_sleep running", func() bool { return backends(t, e, role, "select pg_sleep") == 1 })
		cancels := h.s.Stats().Cancels
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		eventually(t, 5*time.Second, "no backend session left", func() bool { return backends(t, e, role, "") == 0 })
		// The proxy cancelled the running query before closing its backend
		// connection (PostgreSQL does not look at the socket while a query
		// runs); a clean close (Terminate) cancels nothing.
		if got := h.s.Stats().Cancels; got != cancels+1 {
			t.Errorf("cancels after the client vanished: %d, want %d", got, cancels+1)
		}
		clean := h.mustConnect(t.Context())
		_ = clean.Close(t.Context())
		eventually(t, 5*time.Second, "clean close done", func() bool { return backends(t, e, role, "") == 0 })
		if got := h.s.Stats().Cancels; got != cancels+1 {
			t.Errorf("cancels after a clean close: %d, want %d", got, cancels+1)
		}
	})

	t.Run("client vanishes mid-COPY", func(t *testing.T) {
		c := h.mustConnect(t.Context())
		if _, err := c.Exec(t.Context(), "create table if not exists copy_mid (id int, v text)"); err != nil {
			t.Fatal(err)
		}
		c2, err := h.connect(t.Context(), "")
		if err != nil {
			t.Fatal(err)
		}
		started := make(chan struct{})
		block := make(chan struct{})
		src := &blockingReader{rows: 1000, started: started, block: block}
		done := make(chan error, 1)
		go func() {
			_, err := c2.PgConn().CopyFrom(context.Background(), src, "COPY copy_mid FROM STDIN")
			done <- err
		}()
		<-started
		eventually(t, 10*time.Second, "COPY running", func() bool { return backends(t, e, role, "COPY copy_mid") == 1 })
		_ = c2.PgConn().Conn().Close()
		close(block)
		<-done
		eventually(t, 5*time.Second, "only the other client's backend left", func() bool { return backends(t, e, role, "") == 1 })
		var rows int
		if err := c.QueryRow(t.Context(), "select count(*) from copy_mid").Scan(&rows); err != nil || rows != 0 {
			t.Errorf("rows from the abandoned COPY: %d, %v; want 0 (rolled back)", rows, err)
		}
	})

	t.Run("pg_terminate_backend ends one session, the proxy serves on", func(t *testing.T) {
		a := h.mustConnect(t.Context())
		b := h.mustConnect(t.Context())
		var pid int
		if err := a.QueryRow(t.Context(), "select pg_backend_pid()").Scan(&pid); err != nil {
			t.Fatal(err)
		}
		var ok bool
		admin(t, e, []any{&ok}, "select pg_terminate_backend($1)", pid)
		var one int
		err := a.QueryRow(t.Context(), "select 1").Scan(&one)
		if err == nil {
			t.Fatal("the terminated session still answers")
		}
		if code := pgCode(err); code != "57P01" && !strings.Contains(err.Error(), "EOF") && !strings.Contains(err.Error(), "closed") {
			t.Errorf("terminated session: %v, want 57P01 or a closed connection", err)
		}
		if err := b.QueryRow(t.Context(), "select 1").Scan(&one); err != nil {
			t.Errorf("the other session: %v", err)
		}
		c, err := h.connect(t.Context(), "")
		if err != nil {
			t.Fatalf("a new client after the termination: %v", err)
		}
		_ = c.Close(context.Background())
	})

	t.Run("session settings from the startup", func(t *testing.T) {
		c, err := h.connect(t.Context(), "application_name=pgx-client search_path=pg_catalog timezone=Asia/Tokyo")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close(context.Background())
		var app, sp, tz string
		if err := c.QueryRow(t.Context(), "select current_setting('application_name'), current_setting('search_path'), current_setting('TimeZone')").Scan(&app, &sp, &tz); err != nil {
			t.Fatal(err)
		}
		if app != "pgx-client" || sp != "pg_catalog" || tz != "Asia/Tokyo" {
			t.Errorf("settings %q %q %q", app, sp, tz)
		}
		if got := c.PgConn().ParameterStatus("TimeZone"); got != "Asia/Tokyo" {
			t.Errorf("ParameterStatus TimeZone = %q: the server's parameters are not relayed", got)
		}
		if c.PgConn().PID() == 0 || len(c.PgConn().SecretKey()) != 4 {
			t.Errorf("BackendKeyData: pid %d, key %d bytes", c.PgConn().PID(), len(c.PgConn().SecretKey()))
		}
	})

	t.Run("missing database", func(t *testing.T) {
		_, err := pgx.Connect(t.Context(), fmt.Sprintf("host=127.0.0.1 port=%d user=%s dbname=no_such_db sslmode=disable", h.port, role))
		if pgCode(err) != "3D000" || !strings.Contains(err.Error(), "no_such_db") {
			t.Errorf("unknown database: %v, want 3D000 naming it", err)
		}
	})

	t.Run("stdlib driver through the proxy", func(t *testing.T) {
		db := sql.OpenDB(stdlib.GetConnector(*mustParse(t, h.dsn(""))))
		defer db.Close()
		var who string
		if err := db.QueryRowContext(t.Context(), "select current_user").Scan(&who); err != nil || who != role {
			t.Errorf("current_user %q, %v", who, err)
		}
	})
}

func mustParse(t *testing.T, dsn string) *pgx.ConnConfig {
	t.Helper()
	c, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// blockingReader yields COPY rows, then blocks until block is closed.
type blockingReader struct {
	rows    int
	i       int
	started chan struct{}
	block   chan struct{}
	once    sync.Once
}

func (r *blockingReader) Read(p []byte) (int, error) {
	if r.i >= r.rows {
		r.once.Do(func() { close(r.started) })
		<-r.block
		return 0, errors.New("aborted")
	}
	r.i++
	return copy(p, fmt.Sprintf("%d\trow\n", r.i)), nil
}

var _ io.Reader = (*blockingReader)(nil)

// TestSuspendedFrontDoor: the first client after scale to zero rides the
// wake-up out through the connector's cold-start retries, also when the
// first credential call fails as well (a second fault during the recovery).
func TestSuspendedFrontDoor(t *testing.T) {
	e := lakebasetest.Start(t)
	h := startProxy(t, e, func(c *Config) {
		c.Connector.Port = e.FrontDoorPort()
		c.Connector.Token = tokensource.Options{Mode: tokensource.Lazy} // the first client also fetches the first token
	})
	e.SetWakeDelay(500 * time.Millisecond)
	e.Suspend()
	e.FailNext(lakebasetest.RouteCredentials, 1, 503, "TEMPORARILY_UNAVAILABLE")
	c, err := h.connect(t.Context(), "")
	if err != nil {
		t.Fatalf("first client after suspend: %v", err)
	}
	var who string
	if err := c.QueryRow(t.Context(), "select current_user").Scan(&who); err != nil || who != h.role() {
		t.Errorf("current_user %q, %v", who, err)
	}
	_ = c.Close(context.Background())
	if e.WakeUps() != 1 || e.RefusedWhileWaking() == 0 {
		t.Errorf("wake-ups %d, refused while waking %d: the front door was not ridden through", e.WakeUps(), e.RefusedWhileWaking())
	}
	if e.Calls(lakebasetest.RouteCredentials) < 2 {
		t.Errorf("%d credential calls, want the failed one and its retry", e.Calls(lakebasetest.RouteCredentials))
	}
	// Suspending cuts open sessions: the client gets an error, the next
	// client wakes the compute again.
	c, err = h.connect(t.Context(), "")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	e.Suspend()
	var one int
	if err := c.QueryRow(t.Context(), "select 1").Scan(&one); err == nil {
		t.Error("a session cut by the suspend still answers")
	}
	c2, err := h.connect(t.Context(), "")
	if err != nil {
		t.Fatalf("client after the second suspend: %v", err)
	}
	_ = c2.Close(context.Background())
}
