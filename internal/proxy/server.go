package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/lakebase-go/lakebase/connector"
)

// Server is a running proxy: listeners bound by New, sessions served by
// Run. It is safe for concurrent use.
type Server struct {
	cfg    Config
	conn   *connector.Connector
	logger *slog.Logger
	scram  *scramVerifier // nil without a client password
	role   string
	db     string

	listeners []net.Listener
	socket    string // the Unix socket's path, removed on close

	// login opens a backend session for a client; tests replace it.
	login func(ctx context.Context, sp *sessionParams) (*backend, error)

	keys *keyTable

	ctx    context.Context // cancelled by Close: ends logins and handshakes
	cancel context.CancelFunc

	mu       sync.Mutex
	sessions map[*session]struct{}
	draining bool          // a shutdown has started: no new logins
	done     chan struct{} // closed when the last session ends while draining
	closed   bool

	wg      sync.WaitGroup // accept loops and session goroutines
	httpSrv *httpServer

	// counters
	open, total, refused, loginFailures, rejected atomic.Int64
	bytesIn, bytesOut                             atomic.Int64
	cancels                                       atomic.Int64 // cancel requests delivered to Lakebase
	lastLogin                                     atomic.Int32 // 0 none yet, 1 ok, 2 failed
	rejecting                                     atomic.Int64 // over-limit connections being told so
}

// Stats are the proxy's counters.
type Stats struct {
	Open          int64 `json:"open"`           // client connections now open (in startup or spliced)
	Total         int64 `json:"total"`          // sessions opened since start (backend login succeeded)
	Refused       int64 `json:"refused"`        // clients refused before a backend login (user, password, protocol, limit)
	LoginFailures int64 `json:"login_failures"` // backend logins that failed
	OverLimit     int64 `json:"over_limit"`     // clients refused with 53300
	BytesIn       int64 `json:"bytes_in"`       // bytes relayed from clients to Lakebase
	BytesOut      int64 `json:"bytes_out"`      // bytes relayed from Lakebase to clients
	Cancels       int64 `json:"cancels"`        // cancel requests delivered to Lakebase (a client's, or for a client that vanished)
}

// New validates cfg, builds the connector (connector.New: resolution and
// look-ups bounded by ctx) and binds the listeners. Serve the clients with
// Run; Close releases everything.
func New(ctx context.Context, cfg Config) (*Server, error) {
	cfg = cfg.withDefaults()
	if cfg.Connector.Telemetry {
		return nil, &ConfigError{Setting: "Connector.Telemetry", Problem: "the proxy takes raw connections, which otelsql cannot wrap", Fix: "leave Telemetry off"}
	}
	if cfg.ClientPassword != "" {
		if err := validPassword(cfg.ClientPassword); err != nil {
			return nil, err
		}
	}
	s := &Server{cfg: cfg, logger: cfg.Logger, sessions: map[*session]struct{}{}, keys: newKeyTable()}
	if cfg.ClientPassword != "" {
		v, err := newSCRAMVerifier(cfg.ClientPassword)
		if err != nil {
			return nil, err
		}
		s.scram = v
	}
	s.login = s.loginBackend
	s.ctx, s.cancel = context.WithCancel(context.Background())

	// Listeners first: a refused address fails before any network call.
	if err := s.bind(); err != nil {
		s.closeListeners()
		s.cancel()
		return nil, err
	}
	cc := cfg.Connector
	user := cc.BeforeConnect
	cc.BeforeConnect = func(ctx context.Context, pc *pgx.ConnConfig) error {
		if user != nil {
			if err := user(ctx, pc); err != nil {
				return err
			}
		}
		applySession(ctx, pc)
		return nil
	}
	if cc.Logger == nil {
		cc.Logger = cfg.Logger
	}
	c, err := connector.New(ctx, cc)
	if err != nil {
		s.closeListeners()
		s.cancel()
		return nil, err
	}
	s.conn, s.role, s.db = c, c.Role(), c.Database()
	if cfg.HTTPAddress != "" {
		h, err := startHTTP(s, cfg.HTTPAddress)
		if err != nil {
			_ = c.Close()
			s.closeListeners()
			s.cancel()
			return nil, &ConfigError{Setting: "HTTPAddress (--http-address)", Problem: "cannot listen", Err: err, Fix: "use a free host:port, for example 127.0.0.1:9090"}
		}
		s.httpSrv = h
	}
	return s, nil
}

// bind opens every listener and checks the loopback rule.
func (s *Server) bind() error {
	cfg := s.cfg
	nonLoopback := false
	for _, addr := range cfg.Listen {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return &ConfigError{Setting: "Listen (--listen)", Problem: fmt.Sprintf("cannot listen on %q", addr), Err: err, Fix: "use a free host:port, for example 127.0.0.1:5432 (another PostgreSQL or proxy may hold it)"}
		}
		s.listeners = append(s.listeners, ln)
		if ta, ok := ln.Addr().(*net.TCPAddr); !ok || !ta.IP.IsLoopback() {
			nonLoopback = true
			if !cfg.AllowNonLoopback {
				return &ConfigError{Setting: "Listen (--listen)", Problem: fmt.Sprintf("%q is not a loopback address: anyone who reaches it could use this proxy's Lakebase identity", addr),
					Fix: "listen on 127.0.0.1 (the default), or pass --allow-non-loopback together with --client-password-file"}
			}
			if cfg.ClientPassword == "" {
				return &ConfigError{Setting: "ClientPassword (--client-password-file)", Problem: fmt.Sprintf("listening on the non-loopback address %q needs a client password", addr),
					Fix: "pass --client-password-file with a file holding the password clients must give (SCRAM-SHA-256)"}
			}
		}
	}
	if cfg.UnixSocketDir != "" {
		port := 5432
		if len(s.listeners) > 0 {
			if ta, ok := s.listeners[0].Addr().(*net.TCPAddr); ok {
				port = ta.Port
			}
		}
		path := filepath.Join(cfg.UnixSocketDir, ".s.PGSQL."+strconv.Itoa(port))
		if _, err := os.Stat(path); err == nil {
			if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
				_ = c.Close()
				return &ConfigError{Setting: "UnixSocketDir (--unix-socket)", Problem: path + " is in use by another server", Fix: "stop it or choose another directory or port"}
			}
			_ = os.Remove(path) // a stale socket of a proxy that died
		}
		ln, err := net.Listen("unix", path)
		if err != nil {
			return &ConfigError{Setting: "UnixSocketDir (--unix-socket)", Problem: "cannot listen on " + path, Err: err, Fix: "use an existing directory this user may write to"}
		}
		ln.(*net.UnixListener).SetUnlinkOnClose(true)
		s.socket = path
		s.listeners = append(s.listeners, ln)
	}
	if nonLoopback {
		msg := "proxy: listening on a non-loopback address; every client must authenticate with the client password (SCRAM-SHA-256)"
		if cfg.TLS == nil {
			msg += "; without local TLS, session traffic between clients and the proxy is not encrypted"
		}
		s.logger.Warn(msg)
	}
	return nil
}

// Addrs returns the addresses the proxy listens on (TCP first, then the
// Unix socket).
func (s *Server) Addrs() []net.Addr {
	out := make([]net.Addr, 0, len(s.listeners))
	for _, ln := range s.listeners {
		out = append(out, ln.Addr())
	}
	return out
}

// HTTPAddr returns the address of the health endpoints, or nil.
func (s *Server) HTTPAddr() net.Addr {
	if s.httpSrv == nil {
		return nil
	}
	return s.httpSrv.ln.Addr()
}

// Connector returns the connector the proxy logs in with.
func (s *Server) Connector() *connector.Connector { return s.conn }

// Stats returns the current counters.
func (s *Server) Stats() Stats {
	return Stats{Open: s.open.Load(), Total: s.total.Load(), Refused: s.refused.Load(), LoginFailures: s.loginFailures.Load(),
		OverLimit: s.rejected.Load(), BytesIn: s.bytesIn.Load(), BytesOut: s.bytesOut.Load(), Cancels: s.cancels.Load()}
}

// Run serves clients until ctx is done, then shuts down gracefully: the
// listeners close, sessions still logging in are refused (57P01), and
// open sessions may finish within ShutdownGrace; those still open then
// are closed. Run closes the server before it returns (nil after a
// shutdown, or the first listener failure). Run may be called once.
func (s *Server) Run(ctx context.Context) error {
	errc := make(chan error, len(s.listeners))
	for _, ln := range s.listeners {
		s.wg.Go(func() { errc <- s.accept(ln) })
	}
	for _, ln := range s.listeners {
		s.logger.Info("proxy: listening", slog.String("address", ln.Addr().String()), slog.String("network", ln.Addr().Network()),
			slog.String("role", s.role), slog.String("database", s.db), slog.String("lakebase_host", s.conn.Host()))
	}
	if s.httpSrv != nil {
		s.logger.Info("proxy: health endpoints", slog.String("address", s.httpSrv.ln.Addr().String()), slog.String("paths", "/livez /readyz"))
	}
	var runErr error
	select {
	case <-ctx.Done():
	case err := <-errc:
		if !s.isClosed() {
			runErr = err
		}
	}
	s.shutdown()
	return errors.Join(runErr, s.Close())
}

// shutdown stops accepting and waits up to the grace period for sessions.
func (s *Server) shutdown() {
	s.mu.Lock()
	if s.draining || s.closed {
		s.mu.Unlock()
		return
	}
	s.draining = true
	s.done = make(chan struct{})
	n := len(s.sessions)
	if n == 0 {
		close(s.done)
	}
	pending := make([]*session, 0, n)
	for ss := range s.sessions {
		pending = append(pending, ss)
	}
	done := s.done
	s.mu.Unlock()
	s.closeListeners()
	for _, ss := range pending {
		ss.drain() // sessions not yet spliced give up now
	}
	s.logger.Info("proxy: shutting down", slog.Int("open_sessions", n), slog.Duration("grace", s.cfg.ShutdownGrace))
	if n == 0 {
		return
	}
	t := time.NewTimer(s.cfg.ShutdownGrace)
	defer t.Stop()
	select {
	case <-done:
		s.logger.Info("proxy: every session ended within the grace period")
	case <-t.C:
		s.mu.Lock()
		left := len(s.sessions)
		s.mu.Unlock()
		s.logger.Warn("proxy: grace period over; closing the sessions still open", slog.Int("sessions", left))
	}
}

// Close closes the listeners, every session and the connector at once. It
// is idempotent and waits for the proxy's goroutines to end.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		s.wg.Wait()
		return nil
	}
	s.closed = true
	open := make([]*session, 0, len(s.sessions))
	for ss := range s.sessions {
		open = append(open, ss)
	}
	s.mu.Unlock()
	s.cancel()
	s.closeListeners()
	for _, ss := range open {
		ss.kill()
	}
	var errs []error
	if s.httpSrv != nil {
		errs = append(errs, s.httpSrv.close())
	}
	s.wg.Wait()
	if s.conn != nil {
		errs = append(errs, s.conn.Close())
	}
	return errors.Join(errs...)
}

func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

func (s *Server) closeListeners() {
	for _, ln := range s.listeners {
		_ = ln.Close()
	}
}

// accept serves one listener until it is closed.
func (s *Server) accept(ln net.Listener) error {
	var delay time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, os.ErrDeadlineExceeded) || isTemporaryAccept(err) {
				// EMFILE and friends: back off as net/http does.
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				s.logger.Warn("proxy: accept failed; retrying", slog.String("error", err.Error()), slog.Duration("in", delay))
				t := time.NewTimer(delay)
				select {
				case <-t.C:
				case <-s.ctx.Done():
					t.Stop()
					return nil
				}
				continue
			}
			return fmt.Errorf("proxy: accept on %s: %w", ln.Addr(), err)
		}
		delay = 0
		s.admit(c)
	}
}

// admit starts a session for c, or refuses it when the proxy is full.
func (s *Server) admit(c net.Conn) {
	ss := newSession(s, c)
	s.mu.Lock()
	if s.closed || s.draining {
		s.mu.Unlock()
		_ = c.Close()
		return
	}
	over := len(s.sessions) >= s.cfg.MaxConnections
	if !over {
		s.sessions[ss] = struct{}{}
		s.open.Add(1)
	}
	s.mu.Unlock()
	if over {
		// Tell the client why (FATAL 53300 after its startup message, as
		// PostgreSQL does), with a bound on how many are told at once.
		if s.rejecting.Add(1) > int64(max(s.cfg.MaxConnections, 16)) {
			s.rejecting.Add(-1)
			s.rejected.Add(1)
			_ = c.Close()
			return
		}
		s.wg.Go(func() {
			defer s.rejecting.Add(-1)
			ss.refuseFull()
		})
		return
	}
	s.wg.Go(func() {
		if !ss.serve() {
			s.remove(ss)
		}
	})
}

// remove forgets a finished session.
func (s *Server) remove(ss *session) {
	s.mu.Lock()
	delete(s.sessions, ss)
	s.open.Add(-1)
	if s.draining && len(s.sessions) == 0 && s.done != nil {
		select {
		case <-s.done:
		default:
			close(s.done)
		}
	}
	s.mu.Unlock()
}

// isDraining reports whether a shutdown has started.
func (s *Server) isDraining() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.draining || s.closed
}

// sessionParams are what a client's startup asks of the backend session.
type sessionParams struct {
	database string
	params   map[string]string // run-time parameters (application_name, options, ...)
}

type sessionKey struct{}

// applySession sets a session's database and run-time parameters on the
// per-connection copy of the pgx configuration (the connector's
// BeforeConnect hook). The copy shares its RuntimeParams map with the
// connector's base configuration, so the map is replaced, never written.
func applySession(ctx context.Context, pc *pgx.ConnConfig) {
	sp, ok := ctx.Value(sessionKey{}).(*sessionParams)
	if !ok {
		return
	}
	if sp.database != "" {
		pc.Database = sp.database
	}
	rp := maps.Clone(pc.RuntimeParams)
	if rp == nil {
		rp = map[string]string{}
	}
	maps.Copy(rp, sp.params)
	pc.RuntimeParams = rp
}
