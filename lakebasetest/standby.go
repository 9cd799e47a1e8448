package lakebasetest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// standbyAddr is the loopback address of the hot standby: a host of its
// own (all of 127/8 is loopback on Linux), as Lakebase's read_only_host is
// a host name of its own beside the endpoint's host. The server
// certificate covers it.
const standbyAddr = "127.0.0.3"

// standbySlot is the physical replication slot the standby streams from.
const standbySlot = "lakebasetest_standby"

// pollEvery is how often the standby helpers poll the server while they
// wait for a state, each wait bounded by its ctx.
const pollEvery = 5 * time.Millisecond

// WithStandby makes New start a hot standby as well (see StartStandby).
func WithStandby() Option { return func(c *emuConfig) { c.standby = true } }

// Standby is a streaming-replication hot standby of the emulator's
// PostgreSQL: a base backup of it (pg_basebackup -R) streaming from a
// replication slot, with the same configuration, certificate and token
// checks (the same pg_hba.conf and LDAP responder), listening on a loopback
// address of its own (Host, 127.0.0.3) with the primary's port numbers
// (Port, and FrontDoorPort through a forwarder), so a client reaches it by
// changing only the host, as with Lakebase's read_only_host. The fake API
// reports it as the endpoint's status.hosts.read_only_host (and the
// instance's read_only_dns). Writes there fail with SQLSTATE 25006. Safe
// for concurrent use.
type Standby struct {
	e    *Emulator
	dir  string // its directory (under the emulator's): data, socket, log
	data string
	port int // PostgreSQL's port, on Host: the primary's Port number

	front *server // Host:FrontDoorPort -> Host:Port

	mu       sync.Mutex
	running  bool
	promoted bool
}

// ha is the emulator's high-availability state: its standby and, after a
// failover, the forwarder that keeps the primary's address working.
type ha struct {
	mu       sync.Mutex
	standby  *Standby
	starting bool
	primary  *server // after Failover: 127.0.0.1:Port -> the promoted standby
	sock     string  // after Failover: the primary's Unix socket directory
}

// StartStandby starts a hot standby of the emulator's PostgreSQL and
// returns it once it accepts read-only logins and streams: a base backup
// (pg_basebackup -R, about a second), then a server of its own. From then
// on the endpoint's GET response reports its host as read_only_host. An
// emulator has at most one standby: a second call returns the running one;
// after Failover it is an error.
func (e *Emulator) StartStandby(ctx context.Context) (*Standby, error) {
	e.ha.mu.Lock()
	switch {
	case e.ha.starting:
		e.ha.mu.Unlock()
		return nil, errors.New("lakebasetest: StartStandby: another call is starting the standby")
	case e.ha.standby != nil && e.ha.standby.isPromoted():
		e.ha.mu.Unlock()
		return nil, errors.New("lakebasetest: StartStandby after Failover is not supported: the emulator has no replica to stream from its new primary")
	case e.ha.standby != nil:
		s := e.ha.standby
		e.ha.mu.Unlock()
		return s, nil
	}
	e.ha.starting = true
	e.ha.mu.Unlock()

	s, err := e.startStandby(ctx)
	e.ha.mu.Lock()
	e.ha.starting = false
	if err == nil {
		e.ha.standby = s
	}
	e.ha.mu.Unlock()
	return s, err
}

func (e *Emulator) startStandby(ctx context.Context) (_ *Standby, err error) {
	basebackup := filepath.Join(e.bin, "pg_basebackup")
	if _, err := os.Stat(basebackup); err != nil {
		return nil, fmt.Errorf("%w: no pg_basebackup in %s (%s)", ErrPostgresNotFound, e.bin, installHint)
	}
	e.mu.Lock()
	closed, running := e.closed, e.running
	e.mu.Unlock()
	if closed || !running {
		return nil, errors.New("lakebasetest: StartStandby: the primary is not running")
	}
	s := &Standby{e: e, dir: filepath.Join(e.dir, "standby"), port: e.port}
	s.data = filepath.Join(s.dir, "data")
	defer func() {
		if err != nil {
			_ = s.close()
		}
	}()
	if err := os.MkdirAll(s.dir, 0o755); err != nil {
		return nil, err
	}
	if err := e.user.chown(s.dir); err != nil {
		return nil, err
	}
	// The base backup streams its WAL (-X stream) and creates the slot
	// (-C -S) the standby then streams from, so the primary keeps every
	// segment the standby has not received, paused or not.
	if err := e.user.run(basebackup, "-h", e.dir, "-p", strconv.Itoa(e.port), "-U", adminRole,
		"-D", s.data, "-R", "-X", "stream", "-C", "-S", standbySlot, "-c", "fast", "--no-sync"); err != nil {
		return nil, err
	}
	// The copied postgresql.conf is the primary's; the last setting wins.
	conf := fmt.Sprintf(`
# lakebasetest hot standby
listen_addresses = '%s'
unix_socket_directories = '%s'
hot_standby = on
hot_standby_feedback = on
wal_receiver_status_interval = 1s
`, standbyAddr, s.dir)
	f, err := os.OpenFile(filepath.Join(s.data, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return nil, err
	}
	if _, err := f.WriteString(conf); err != nil {
		f.Close()
		return nil, err
	}
	if err := f.Close(); err != nil {
		return nil, err
	}
	if err := s.pgCtl("-w", "-t", "30", "-l", filepath.Join(s.dir, "postgres.log"), "start"); err != nil {
		_ = s.pgCtl("-w", "-m", "immediate", "stop") // in case it started after all
		log, _ := os.ReadFile(filepath.Join(s.dir, "postgres.log"))
		return nil, fmt.Errorf("lakebasetest: start the standby: %w\nserver log:\n%s", err, log)
	}
	s.mu.Lock()
	s.running = true
	s.mu.Unlock()
	if err := s.waitStreaming(ctx); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(standbyAddr, strconv.Itoa(e.FrontDoorPort())))
	if err != nil {
		return nil, fmt.Errorf("lakebasetest: the standby's front door %s:%d: %w", standbyAddr, e.FrontDoorPort(), err)
	}
	s.front = newServer(ln, forwardTo(func() *server { return s.front }, net.JoinHostPort(standbyAddr, strconv.Itoa(s.port))))
	s.front.start()
	return s, nil
}

// forwardTo returns a connection handler that forwards to backend through
// the server srv returns.
func forwardTo(srv func() *server, backend string) func(net.Conn) {
	return func(c net.Conn) {
		b, err := net.DialTimeout("tcp", backend, handshakeTimeout)
		if err != nil {
			return
		}
		s := srv()
		if !s.track(b) {
			return
		}
		defer s.untrack(b)
		s.forward(c, b)
	}
}

// Standby returns the emulator's standby (promoted after Failover), or nil
// if none was started.
func (e *Emulator) Standby() *Standby {
	e.ha.mu.Lock()
	defer e.ha.mu.Unlock()
	return e.ha.standby
}

// ReadOnlyHost is the host the endpoint reports as read_only_host: the
// standby's, while one runs and has not been promoted; else "".
func (e *Emulator) ReadOnlyHost() string {
	if s := e.Standby(); s != nil && !s.isPromoted() {
		return s.Host()
	}
	return ""
}

// endpointHosts is status.hosts of the endpoint's GET response.
func (e *Emulator) endpointHosts() map[string]string {
	hosts := map[string]string{"host": e.Host(), "read_write_pooled_host": e.PoolerHost()}
	if ro := e.ReadOnlyHost(); ro != "" {
		hosts["read_only_host"] = ro
	}
	return hosts
}

// Host is the standby's host: 127.0.0.3, a loopback address of its own.
func (s *Standby) Host() string { return standbyAddr }

// Port is the standby PostgreSQL's own port on Host: the same number as
// the emulator's Port (on the primary's address), so a client configured
// for the primary reaches the standby by changing only the host.
// FrontDoorPort on Host reaches it too (a plain forwarder: the standby is
// never suspended).
func (s *Standby) Port() int { return s.port }

// AdminConnString is a keyword/value DSN for the superuser on the standby
// over TLS (test-only: it holds the admin password).
func (s *Standby) AdminConnString() string {
	e := s.e
	return fmt.Sprintf("host=%s port=%d dbname=%s user=%s password=%s sslmode=verify-full sslrootcert='%s'",
		standbyAddr, s.port, databaseName, adminRole, e.adminPW, e.caFile)
}

// admin connects as the superuser over the standby's Unix socket.
func (s *Standby) admin(ctx context.Context) (*pgx.Conn, error) {
	conn, err := pgx.Connect(ctx, fmt.Sprintf("host=%s port=%d user=%s dbname=%s sslmode=disable", s.dir, s.port, adminRole, databaseName))
	if err != nil {
		return nil, fmt.Errorf("lakebasetest: standby admin connect: %w", err)
	}
	return conn, nil
}

// query runs a one-value query as the superuser on the standby.
func (s *Standby) query(ctx context.Context, sql string, dst any) error {
	conn, err := s.admin(ctx)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	if err := conn.QueryRow(ctx, sql).Scan(dst); err != nil {
		return fmt.Errorf("lakebasetest: standby: %s: %w", sql, err)
	}
	return nil
}

// poll runs check until it reports done, an error, or ctx ends.
func poll(ctx context.Context, what string, check func() (bool, error)) error {
	t := time.NewTicker(pollEvery)
	defer t.Stop()
	for {
		done, err := check()
		if err != nil {
			return err
		}
		if done {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("lakebasetest: waiting for %s: %w", what, ctx.Err())
		case <-t.C:
		}
	}
}

func (s *Standby) waitStreaming(ctx context.Context) error {
	return poll(ctx, "the standby to stream", func() (bool, error) {
		var n int
		err := s.query(ctx, "SELECT count(*)::int FROM pg_stat_wal_receiver WHERE status = 'streaming'", &n)
		return n == 1, err
	})
}

// PauseReplay pauses WAL replay on the standby (pg_wal_replay_pause) and
// returns once replay has stopped: it keeps receiving WAL, but writes
// committed on the primary from now on are not visible on the standby
// until ResumeReplay.
func (s *Standby) PauseReplay(ctx context.Context) error {
	if err := s.exec(ctx, "SELECT pg_wal_replay_pause()"); err != nil {
		return err
	}
	return poll(ctx, "replay to pause", func() (bool, error) {
		var state string
		err := s.query(ctx, "SELECT pg_get_wal_replay_pause_state()", &state)
		return state == "paused", err
	})
}

// ResumeReplay resumes WAL replay (pg_wal_replay_resume).
func (s *Standby) ResumeReplay(ctx context.Context) error {
	return s.exec(ctx, "SELECT pg_wal_replay_resume()")
}

// ReplayPaused reports whether replay is paused or a pause was requested.
func (s *Standby) ReplayPaused(ctx context.Context) (bool, error) {
	var state string
	if err := s.query(ctx, "SELECT pg_get_wal_replay_pause_state()", &state); err != nil {
		return false, err
	}
	return state != "not paused", nil
}

// CatchUp returns once the standby has replayed everything the primary had
// written when CatchUp was called (its current WAL position): every
// transaction committed on the primary before the call is then visible on
// the standby. It polls until ctx ends; with replay paused it fails at
// once.
func (s *Standby) CatchUp(ctx context.Context) error {
	if s.isPromoted() {
		return errors.New("lakebasetest: CatchUp: the standby was promoted")
	}
	// The end of a WAL record written now: every commit before the call
	// precedes it (pg_current_wal_lsn lags asynchronous commits, and the
	// insert position can sit past a page header no record ends at).
	var target string
	if err := s.e.adminQuery(ctx, "SELECT pg_logical_emit_message(false, 'lakebasetest', 'catch-up')::text", &target); err != nil {
		return err
	}
	if paused, err := s.ReplayPaused(ctx); err != nil || paused {
		if err == nil {
			err = errors.New("lakebasetest: CatchUp: replay is paused (ResumeReplay first)")
		}
		return err
	}
	return poll(ctx, "the standby to replay "+target, func() (bool, error) {
		var ok bool
		err := s.query(ctx, "SELECT coalesce(pg_last_wal_replay_lsn() >= '"+target+"'::pg_lsn, false)", &ok)
		return ok, err
	})
}

func (s *Standby) exec(ctx context.Context, sql string) error {
	conn, err := s.admin(ctx)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, sql); err != nil {
		return fmt.Errorf("lakebasetest: standby: %s: %w", sql, err)
	}
	return nil
}

func (s *Standby) pgCtl(args ...string) error {
	return s.e.user.run(filepath.Join(s.e.bin, "pg_ctl"), append([]string{"-D", s.data}, args...)...)
}

func (s *Standby) isPromoted() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.promoted
}

// close stops the standby's forwarder and, unless it was promoted (it is
// the emulator's primary then, stopped by Close), its server.
func (s *Standby) close() error {
	if s.front != nil {
		s.front.close()
	}
	s.mu.Lock()
	stop := s.running && !s.promoted
	s.running = false
	s.mu.Unlock()
	if stop {
		return s.pgCtl("-w", "-m", "fast", "stop")
	}
	return nil
}

// Failover promotes the standby to primary, as Lakebase's high
// availability does when the primary fails: the primary is stopped (fast
// shutdown: its sessions are disconnected, and the standby receives all of
// its WAL first, so every acknowledged commit survives), the standby is
// promoted (pg_ctl promote), and the endpoint's primary host follows it:
// Port on Host reaches it through a forwarder, FrontDoorPort and the
// pooler too, and AdminExec, Stop, Start and Restart act on it. Until the
// forwarder is up (well under a second) new connections are refused, like
// a failover's short outage. Afterwards the endpoint reports no
// read_only_host (the emulator has no replica left; the standby's own
// address now reaches the new, writable primary).
func (e *Emulator) Failover(ctx context.Context) error {
	e.ha.mu.Lock()
	s := e.ha.standby
	e.ha.mu.Unlock()
	if s == nil {
		return errors.New("lakebasetest: Failover needs a standby (StartStandby or WithStandby)")
	}
	s.mu.Lock()
	if s.promoted {
		s.mu.Unlock()
		return errors.New("lakebasetest: Failover: the standby was already promoted")
	}
	s.promoted = true
	s.mu.Unlock()
	if err := e.Stop(ctx); err != nil {
		return fmt.Errorf("lakebasetest: Failover: stop the primary: %w", err)
	}
	// Promotion ends a paused replay (PostgreSQL 14+) and replays all the
	// WAL received first.
	if err := s.pgCtl("-w", "-t", "60", "promote"); err != nil {
		return fmt.Errorf("lakebasetest: Failover: promote the standby: %w", err)
	}
	e.mu.Lock()
	e.data = s.data
	e.running = true
	e.mu.Unlock()
	e.ha.mu.Lock()
	e.ha.sock = s.dir
	e.ha.mu.Unlock()
	// The primary's address: PostgreSQL released it when it stopped.
	target := net.JoinHostPort(standbyAddr, strconv.Itoa(s.port))
	var ln net.Listener
	err := poll(ctx, "the primary's port to be free", func() (bool, error) {
		var err error
		ln, err = net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(e.port)))
		return err == nil, nil
	})
	if err != nil {
		return fmt.Errorf("lakebasetest: Failover: %w", err)
	}
	var fwd *server
	fwd = newServer(ln, forwardTo(func() *server { return fwd }, target))
	e.ha.mu.Lock()
	e.ha.primary = fwd
	e.ha.mu.Unlock()
	fwd.start()
	e.front.retarget(target)
	return nil
}

// adminSocket is the Unix socket directory of the current primary.
func (e *Emulator) adminSocket() string {
	e.ha.mu.Lock()
	defer e.ha.mu.Unlock()
	if e.ha.sock != "" {
		return e.ha.sock
	}
	return e.dir
}

// adminQuery runs a one-value query as the superuser on the primary.
func (e *Emulator) adminQuery(ctx context.Context, sql string, dst any) error {
	conn, err := pgx.Connect(ctx, fmt.Sprintf("host=%s port=%d user=%s dbname=%s sslmode=disable", e.adminSocket(), e.port, adminRole, databaseName))
	if err != nil {
		return fmt.Errorf("lakebasetest: admin connect: %w", err)
	}
	defer conn.Close(context.Background())
	if err := conn.QueryRow(ctx, sql).Scan(dst); err != nil {
		return fmt.Errorf("lakebasetest: %s: %w", sql, err)
	}
	return nil
}

// closeHA stops the forwarders and a standby that was not promoted.
func (e *Emulator) closeHA() error {
	e.ha.mu.Lock()
	s, fwd := e.ha.standby, e.ha.primary
	e.ha.mu.Unlock()
	if fwd != nil {
		fwd.close()
	}
	if s != nil {
		return s.close()
	}
	return nil
}

// backendAddr is where the front door forwards to.
func (f *frontDoor) backendAddr() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.backend
}

// retarget makes the front door forward new connections to addr and cuts
// the forwarded ones.
func (f *frontDoor) retarget(addr string) {
	f.mu.Lock()
	f.backend = addr
	f.mu.Unlock()
	f.srv.cut()
}
