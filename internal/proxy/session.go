package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/lakebase-go/lakebase/connector"
)

var sessionIDs atomic.Uint64

// session is one client connection: its startup, the backend login and
// then the splice.
type session struct {
	s      *Server
	id     uint64
	start  time.Time
	client net.Conn // the raw connection; cl is what is spoken over
	cl     net.Conn // client, or its TLS layer after an SSLRequest

	remote   string
	database string
	appName  string

	loginCtx    context.Context
	loginCancel context.CancelFunc

	mu      sync.Mutex
	back    *backend
	spliced bool
	killed  bool
	key     uint32 // proxy-issued process id, 0 until issued

	relays      atomic.Int32
	backendGone atomic.Bool // the backend ended the session first
	fromClient  atomic.Int64
	toClient    atomic.Int64
	endOnce     sync.Once
	endErr      error  // why the session ended, when not a clean close
	endHow      string // "client closed", "backend closed", ...
}

func newSession(s *Server, c net.Conn) *session {
	ss := &session{s: s, id: sessionIDs.Add(1), start: time.Now(), client: c, cl: c, remote: c.RemoteAddr().String()}
	if ss.remote == "" || ss.remote == "@" {
		ss.remote = "unix:" + c.LocalAddr().String()
	}
	ss.loginCtx, ss.loginCancel = context.WithCancel(s.ctx)
	return ss
}

// drain is called when a shutdown starts: a session that has not begun
// splicing gives up (its client gets 57P01).
func (ss *session) drain() {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if !ss.spliced {
		ss.loginCancel()
	}
}

// kill closes both sides at once.
func (ss *session) kill() {
	ss.mu.Lock()
	ss.killed = true
	b := ss.back
	ss.mu.Unlock()
	ss.end("closed by the proxy", nil)
	ss.loginCancel()
	_ = ss.client.Close()
	if b != nil {
		_ = b.conn.Close()
	}
}

// negotiate runs the startup phase up to the StartupMessage (or a
// CancelRequest): SSLRequest is answered S when local TLS is configured
// (once), else N; GSSENCRequest is answered N. At most two such requests
// are accepted, as PostgreSQL does.
func (ss *session) negotiate() (packet, error) {
	sslDone := false
	for range 3 {
		p, err := readPacket(ss.cl)
		if err != nil {
			return p, err
		}
		switch p.kind {
		case kindStartup, kindCancel:
			return p, nil
		case kindGSSENC:
			if _, err := ss.cl.Write([]byte{'N'}); err != nil {
				return p, err
			}
		case kindSSL:
			if sslDone {
				return p, fmt.Errorf("%w: SSLRequest after encryption was negotiated", errStartup)
			}
			sslDone = true
			if ss.s.cfg.TLS == nil {
				if _, err := ss.cl.Write([]byte{'N'}); err != nil {
					return p, err
				}
				continue
			}
			if _, err := ss.cl.Write([]byte{'S'}); err != nil {
				return p, err
			}
			tc := tls.Server(ss.client, ss.s.cfg.TLS)
			if err := tc.Handshake(); err != nil {
				return p, fmt.Errorf("proxy: client TLS handshake: %w", err)
			}
			ss.cl = tc
		}
	}
	return packet{}, fmt.Errorf("%w: too many negotiation requests", errStartup)
}

// refuseFull answers a client over MaxConnections: FATAL 53300 after its
// startup message (a cancel request is still delivered).
func (ss *session) refuseFull() {
	defer ss.client.Close()
	_ = ss.client.SetDeadline(time.Now().Add(ss.s.cfg.HandshakeTimeout))
	p, err := ss.negotiate()
	if err != nil {
		return
	}
	if p.kind == kindCancel {
		ss.s.forwardCancel(p)
		return
	}
	ss.s.rejected.Add(1)
	ss.s.logger.Warn("proxy: too many clients; connection refused", slog.String("client", ss.remote), slog.Int("max_connections", ss.s.cfg.MaxConnections))
	_ = writeMsgs(ss.cl, fatal("53300", "sorry, too many clients already",
		fmt.Sprintf("the lakebase proxy allows %d concurrent clients; close idle ones or start it with a higher --max-connections", ss.s.cfg.MaxConnections), ""))
}

// serve runs the session: startup, checks, backend login, then hands the
// connection to the two relays. It returns true when the relays own the
// session (they remove it when they end).
func (ss *session) serve() (handedOff bool) {
	s := ss.s
	defer func() {
		if !handedOff {
			_ = ss.client.Close()
		}
	}()
	_ = ss.client.SetDeadline(time.Now().Add(s.cfg.HandshakeTimeout))
	p, err := ss.negotiate()
	if err != nil {
		if !isEOF(err) && errors.Is(err, errStartup) {
			_ = writeMsgs(ss.cl, fatal("08P01", "invalid startup packet layout: "+strings.TrimPrefix(err.Error(), "proxy: "), "", ""))
		}
		ss.finishEarly(err, false)
		return false
	}
	if p.kind == kindCancel {
		s.forwardCancel(p)
		return false
	}
	if p.major != 3 {
		ss.refuse("0A000", fmt.Sprintf("unsupported frontend protocol %d.%d: the lakebase proxy speaks protocol 3.0", p.major, p.minor), "")
		return false
	}
	if err := ss.checkStartup(&p); err != nil {
		return false
	}
	if s.isDraining() {
		ss.refuse("57P01", "the lakebase proxy is shutting down", "connect again to a running proxy")
		return false
	}
	if s.scram != nil {
		if err := ss.authenticate(&p); err != nil {
			return false
		}
	}
	sp := ss.sessionParams(&p)
	// The backend login may take up to the connector's ConnectTimeout (a
	// waking endpoint); the client only waits.
	_ = ss.client.SetDeadline(time.Time{})
	b, err := s.login(context.WithValue(ss.loginCtx, sessionKey{}, sp), sp)
	if err != nil {
		s.loginFailures.Add(1)
		if !clientCaused(err, ss.database != s.db) {
			s.lastLogin.Store(2)
		}
		if s.isDraining() && ss.loginCtx.Err() != nil {
			ss.refuse("57P01", "the lakebase proxy is shutting down", "connect again to a running proxy")
			return false
		}
		resp := loginErrorResponse(err, ss.database)
		_ = writeMsgs(ss.cl, resp)
		ss.finishEarly(errors.New(resp.Code+": "+resp.Message), true)
		return false
	}
	s.lastLogin.Store(1)
	key, secret := s.keys.issue(b)
	ss.mu.Lock()
	if ss.killed {
		ss.mu.Unlock()
		s.keys.remove(key)
		_ = b.conn.Close()
		ss.finishEarly(errors.New("closed during login"), true)
		return false
	}
	ss.back, ss.key, ss.spliced = b, key, true
	ss.mu.Unlock()

	if err := writeMsgs(ss.cl, welcome(b, key, secret)...); err != nil {
		s.keys.remove(key)
		ss.closeBoth()
		ss.finishEarly(fmt.Errorf("client gone before the session started: %w", err), true)
		return false
	}
	s.total.Add(1)
	s.logger.Info("proxy: session open", slog.Uint64("session", ss.id), slog.String("client", ss.remote),
		slog.String("database", ss.database), slog.String("application_name", ss.appName), slog.Uint64("backend_pid", uint64(b.pid)))
	ss.relays.Store(2)
	s.wg.Go(func() { ss.relayClient() })
	s.wg.Go(func() { ss.relayBackend() })
	return true
}

// clientCaused reports whether a failed login is the client's own doing
// (a database of its choice that does not exist or that the role may not
// use), which says nothing about the proxy's readiness.
func clientCaused(err error, ownDatabase bool) bool {
	var le *connector.LoginError
	return ownDatabase && errors.As(err, &le) && (le.Reason == connector.LoginDatabaseMissing || le.Reason == connector.LoginNoPermission)
}

// checkStartup applies the user rule and reads the session settings; on a
// refusal the client has been told.
func (ss *session) checkStartup(p *packet) error {
	s := ss.s
	var unknown []string
	for _, kv := range p.params {
		if strings.HasPrefix(kv.name, "_pq_.") {
			unknown = append(unknown, kv.name)
		}
	}
	if p.minor > 0 || len(unknown) > 0 {
		// As PostgreSQL: accept, saying which version and options apply.
		if err := writeMsgs(ss.cl, &pgproto3.NegotiateProtocolVersion{NewestMinorProtocol: 0, UnrecognizedOptions: unknown}); err != nil {
			ss.finishEarly(err, false)
			return err
		}
	}
	if v, ok := p.get("replication"); ok && v != "" && !strings.EqualFold(v, "false") && v != "0" && !strings.EqualFold(v, "off") && !strings.EqualFold(v, "no") {
		return ss.refuse("0A000", "the lakebase proxy does not relay replication connections", "connect to Lakebase directly for replication")
	}
	user, _ := p.get("user")
	if !s.cfg.UserAny && user != "" && user != s.role {
		return ss.refuse("28000", fmt.Sprintf("this lakebase proxy logs in as role %q, not %q", s.role, safeName(user)),
			fmt.Sprintf("connect with user %q (psql -U, PGUSER), or start the proxy with --user-any to accept any user name", s.role))
	}
	db, _ := p.get("database")
	if db == "" || db == user {
		// libpq sends the user name when no database is given.
		db = s.db
	}
	ss.database = db
	ss.appName, _ = p.get("application_name")
	return nil
}

// sessionParams turns the startup parameters into the backend session's.
func (ss *session) sessionParams(p *packet) *sessionParams {
	sp := &sessionParams{database: ss.database, params: map[string]string{}}
	for _, kv := range p.params {
		switch {
		case kv.name == "user", kv.name == "database", kv.name == "replication", strings.HasPrefix(kv.name, "_pq_."):
		default:
			sp.params[kv.name] = kv.value
		}
	}
	return sp
}

// refuse sends a FATAL error and ends the session (before any login).
func (ss *session) refuse(code, msg, hint string) error {
	ss.s.refused.Add(1)
	_ = writeMsgs(ss.cl, fatal(code, msg, hint, ""))
	err := errors.New(code + ": " + msg)
	ss.finishEarly(err, false)
	return err
}

// finishEarly logs the end of a session that never reached the splice.
func (ss *session) finishEarly(err error, loggedIn bool) {
	if isEOF(err) && !loggedIn {
		return // a port probe or a client that gave up: not worth a line
	}
	ss.s.logger.Info("proxy: session close", slog.Uint64("session", ss.id), slog.String("client", ss.remote),
		slog.String("database", ss.database), slog.Duration("duration", time.Since(ss.start)),
		slog.Int64("bytes_in", 0), slog.Int64("bytes_out", 0), slog.String("error", cleanErr(err)))
}

// end records why the session ends (the first reason wins).
func (ss *session) end(how string, err error) {
	ss.endOnce.Do(func() { ss.endHow, ss.endErr = how, err })
}

// closeBoth closes the client and the backend connection.
func (ss *session) closeBoth() {
	_ = ss.client.Close()
	ss.mu.Lock()
	b := ss.back
	ss.mu.Unlock()
	if b != nil {
		_ = b.conn.Close()
	}
}

// finish runs once both relays have ended: bookkeeping and the close line.
func (ss *session) finish() {
	s := ss.s
	s.keys.remove(ss.key)
	in, out := ss.fromClient.Load(), ss.toClient.Load()
	s.bytesIn.Add(in)
	s.bytesOut.Add(out)
	attrs := []any{slog.Uint64("session", ss.id), slog.String("client", ss.remote), slog.String("database", ss.database),
		slog.Duration("duration", time.Since(ss.start)), slog.Int64("bytes_in", in), slog.Int64("bytes_out", out),
		slog.String("end", ss.endHow)}
	if ss.endErr != nil {
		attrs = append(attrs, slog.String("error", cleanErr(ss.endErr)))
	}
	s.logger.Info("proxy: session close", attrs...)
}

// relayClient copies client bytes to the backend. When the client goes
// away without a Terminate message (a killed psql, a dropped network, a
// client that gave up mid-query), the backend's running query is
// cancelled first, so no backend keeps working for nobody.
func (ss *session) relayClient() {
	defer ss.relayDone()
	b := ss.back
	var tail tailBytes
	rerr, werr := relay(b.conn, ss.cl, &ss.fromClient, &tail)
	err := errors.Join(rerr, werr)
	clean := tail.isTerminate()
	switch {
	case clean:
		ss.end("client terminated", nil)
	case err == nil || isEOF(err) || isClosedConn(err):
		ss.end("client closed the connection", nil)
	default:
		ss.end("client connection failed", err)
	}
	if !clean && !ss.backendGone.Load() {
		// Also when the proxy itself closes the session (shutdown): a
		// cancel for an idle session is ignored by the server.
		ctx, cancel := context.WithTimeout(context.Background(), cancelTimeout)
		if err := sendCancel(ctx, b); err != nil {
			ss.s.logger.Debug("proxy: cancel after client disconnect failed", slog.Uint64("session", ss.id), slog.String("error", err.Error()))
		} else {
			ss.s.cancels.Add(1)
		}
		cancel()
	}
	ss.closeBoth()
}

// relayBackend copies backend bytes to the client; when the backend ends
// the session (pg_terminate_backend, a restart, the idle timeout) its last
// message reaches the client first.
func (ss *session) relayBackend() {
	defer ss.relayDone()
	rerr, werr := relay(ss.cl, ss.back.conn, &ss.toClient, nil)
	if werr == nil && !isClosedConn(rerr) {
		ss.backendGone.Store(true) // the backend ended it (EOF or a failure), not the proxy
	}
	err := errors.Join(rerr, werr)
	switch {
	case err == nil || isEOF(err):
		ss.end("backend closed the connection", nil)
	case isClosedConn(err):
		// closed by the other relay or by Close: that one said why
		ss.end("closed", nil)
	default:
		ss.end("backend connection failed", err)
	}
	ss.closeBoth()
}

func (ss *session) relayDone() {
	if ss.relays.Add(-1) == 0 {
		ss.finish()
		ss.s.remove(ss)
	}
}

// welcome is what a client receives once the backend session is up:
// AuthenticationOk, the server's ParameterStatus messages, the proxy's own
// BackendKeyData and ReadyForQuery.
func welcome(b *backend, pid uint32, secret []byte) []pgproto3.BackendMessage {
	msgs := []pgproto3.BackendMessage{&pgproto3.AuthenticationOk{}}
	names := make([]string, 0, len(b.params))
	for k := range b.params {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		msgs = append(msgs, &pgproto3.ParameterStatus{Name: k, Value: b.params[k]})
	}
	tx := b.txStatus
	if tx == 0 {
		tx = 'I'
	}
	return append(msgs, &pgproto3.BackendKeyData{ProcessID: pid, SecretKey: secret}, &pgproto3.ReadyForQuery{TxStatus: tx})
}

// fatal builds a FATAL ErrorResponse.
func fatal(code, msg, hint, detail string) *pgproto3.ErrorResponse {
	return &pgproto3.ErrorResponse{Severity: "FATAL", SeverityUnlocalized: "FATAL", Code: code, Message: msg, Hint: hint, Detail: detail}
}

// writeMsgs encodes msgs and writes them in one write.
func writeMsgs(w io.Writer, msgs ...pgproto3.BackendMessage) error {
	var buf []byte
	for _, m := range msgs {
		var err error
		if buf, err = m.Encode(buf); err != nil {
			return err
		}
	}
	_, err := w.Write(buf)
	return err
}

func isEOF(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
}

func isClosedConn(err error) bool { return errors.Is(err, net.ErrClosed) }

// cleanErr is an error's text for a log line: scrubbed like every message
// that could quote a server or SDK response.
func cleanErr(err error) string {
	if err == nil {
		return ""
	}
	return scrub(err.Error())
}
