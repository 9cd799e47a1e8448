package connector

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// DefaultConnectTimeout bounds one new physical connection, cold-start
// retries included, when neither Config.ConnectTimeout nor
// PGCONNECT_TIMEOUT is set. A scaled-to-zero Lakebase endpoint usually
// wakes within a few hundred milliseconds but can take tens of seconds; 60 s
// rides that out while still failing within a minute when the host is
// wrong. (The Databricks CLI allows 120 s.)
const DefaultConnectTimeout = 60 * time.Second

// Cold-start backoff: attempts coldStartStep apart for the first
// coldStartFlat of a wake (most computes wake within a few hundred
// milliseconds, and the first connection should follow closely), then
// doubling up to coldStartMax; each wait jittered down by up to half. A
// 300 ms wake costs about 8 refused attempts per waiting connection, a 3 s
// wake about 32.
const (
	coldStartStep = 50 * time.Millisecond
	coldStartFlat = time.Second
	coldStartMax  = time.Second
)

// wakeBackoff is the cold-start retry schedule of one connection.
type wakeBackoff struct {
	start time.Time
	wait  time.Duration
}

func newWakeBackoff() wakeBackoff { return wakeBackoff{start: time.Now(), wait: coldStartStep} }

// next returns the jittered wait before the next attempt.
func (b *wakeBackoff) next() time.Duration {
	if time.Since(b.start) >= coldStartFlat {
		b.wait = min(b.wait*2, coldStartMax)
	}
	return b.wait/2 + rand.N(b.wait/2+1)
}

// sleepCtx waits d; false if ctx ended first.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// WakeError reports that a new connection kept failing the way a waking
// (scaled-to-zero) or restarting endpoint fails until ConnectTimeout or the
// caller's deadline ran out. It is transient: a later attempt may succeed
// (tokensource.IsTransient reports true). errors.Is reaches the context
// error that ended the retries (context.DeadlineExceeded or
// context.Canceled) and the last attempt's error.
type WakeError struct {
	Host     string // the host that did not accept the connection
	Attempts int    // connection attempts made
	Err      error  // the last attempt's error
	// Ctx is the context error that ended the retries:
	// context.DeadlineExceeded when ConnectTimeout or the caller's deadline
	// ran out, context.Canceled when the caller cancelled. Nil if the
	// retries ended otherwise.
	Ctx error

	timeout time.Duration // ConnectTimeout
	caller  bool          // the caller's context ended first
}

// Error implements error.
func (e *WakeError) Error() string {
	why := ""
	switch {
	case e.Ctx != nil && e.caller:
		why = " before the caller's context ended (" + e.Ctx.Error() + ")"
	case e.Ctx != nil && e.timeout > 0:
		why = " within ConnectTimeout (" + e.timeout.String() + ")"
	}
	return fmt.Sprintf("connector: %s did not accept a connection after %d attempts%s (the endpoint may be waking up from scale to zero, restarting or unreachable): %v (fix: retry later, or raise ConnectTimeout/PGCONNECT_TIMEOUT)", e.Host, e.Attempts, why, e.Err)
}

// Unwrap returns the last attempt's error, unless that attempt timed out
// because the context ended (Ctx reports that; pgconn would replace an
// error whose chain holds a timeout with its own, dropping the WakeError).
func (e *WakeError) Unwrap() error {
	var ne net.Error
	if e.Ctx != nil && errors.As(e.Err, &ne) && ne.Timeout() {
		return nil
	}
	return e.Err
}

// Is reports whether target is the context error that ended the retries,
// so errors.Is(err, context.DeadlineExceeded) holds for a WakeError of a
// connection that ran out of time.
func (e *WakeError) Is(target error) bool { return e.Ctx != nil && target == e.Ctx }

// Transient reports true: the condition is expected to pass.
// tokensource.IsTransient consults it.
func (e *WakeError) Transient() bool { return true }

// GoString is Error, so %#v never prints the driver error's fields.
func (e *WakeError) GoString() string { return e.Error() }

// Format implements fmt.Formatter: every verb prints Error (fmt would print
// the fields for verbs such as %d).
func (e *WakeError) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(e.Error())) }

// MarshalJSON encodes the message, never the driver error's fields.
func (e *WakeError) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Error     string `json:"error"`
		Host      string `json:"host"`
		Attempts  int    `json:"attempts"`
		Transient bool   `json:"transient"`
	}{e.Error(), e.Host, e.Attempts, true})
}

// wakeError is the *WakeError of a connection whose retries ended with
// ctx (derived from caller and bounded by ConnectTimeout).
func (c *Connector) wakeError(ctx, caller context.Context, attempts int, last error) *WakeError {
	return &WakeError{Host: c.host, Attempts: attempts, Err: last, Ctx: ctx.Err(), timeout: c.cfg.ConnectTimeout, caller: caller.Err() != nil}
}

// The pgxpool path (PoolConfig, BeforeConnect) has no hook around a whole
// connection attempt: pgx.ConnectConfig runs inside pgxpool. So the
// cold-start retries happen below it, in the connection's DialFunc. The
// wakeDialer dials (every address of the host, in order), negotiates TLS
// itself and hands pgconn a wakeConn that records what pgconn writes until
// the server's first answer. If the transport fails (refused, reset, closed
// before TLS) or the server's first answer is a cold-start error (57P03,
// class 08), it dials again with the wake backoff and replays the startup
// message on the new transport, so pgconn sees one connection that logged
// in late. Whatever else the server answers is passed through unchanged
// (a refused login reaches pgx as the server sent it). The token is the
// one BeforeConnect put in the config: no credential call per retry.

// wakeDialer is the DialFunc/LookupFunc pair of one connection on the
// pgxpool path.
type wakeDialer struct {
	c      *Connector
	caller context.Context // BeforeConnect's context
	tls    *tls.Config     // nil: plaintext (sslmode=disable)
	direct bool            // sslnegotiation=direct
	dial   pgconn.DialFunc
	lookup pgconn.LookupFunc

	mu    sync.Mutex
	addrs map[string][]string // host -> addresses, from lookup
	used  bool                // the login's dial was made; later dials are cancel requests
}

// installWake routes cc's connection through a wakeDialer. It leaves cc
// alone when it has fallbacks (each with its own TLS settings).
func (c *Connector) installWake(ctx context.Context, cc *pgconn.Config) {
	if len(cc.Fallbacks) > 0 || cc.DialFunc == nil || cc.LookupFunc == nil {
		return
	}
	w := &wakeDialer{c: c, caller: ctx, tls: cc.TLSConfig, direct: cc.SSLNegotiation == "direct", dial: cc.DialFunc, lookup: cc.LookupFunc, addrs: map[string][]string{}}
	cc.TLSConfig = nil // negotiated by the wakeDialer
	cc.DialFunc = w.dialFunc
	cc.LookupFunc = w.lookupFunc
}

// lookupFunc resolves host and remembers its addresses; pgconn gets the
// name back, so that it makes one DialFunc call and one connection attempt
// covers every address.
func (w *wakeDialer) lookupFunc(ctx context.Context, host string) ([]string, error) {
	addrs, err := w.lookup(ctx, host)
	if err != nil {
		return nil, err
	}
	w.mu.Lock()
	w.addrs[host] = addrs
	w.mu.Unlock()
	return []string{host}, nil
}

func (w *wakeDialer) dialFunc(ctx context.Context, network, address string) (net.Conn, error) {
	w.mu.Lock()
	cancelReq := w.used
	w.used = true
	w.mu.Unlock()
	if cancelReq {
		// A cancel request for the established connection: encrypted like
		// the connection itself, no retries.
		conn, err := w.dial(ctx, network, address)
		if err != nil || w.tls == nil {
			return conn, err
		}
		tc, err := w.startTLS(ctx, conn)
		if err != nil {
			conn.Close()
			return nil, err
		}
		return tc, nil
	}
	wc := &wakeConn{w: w, ctx: ctx, network: network, address: address, backoff: newWakeBackoff()}
	if err := wc.establish(); err != nil {
		return nil, err
	}
	return wc, nil
}

// transport makes one attempt: dial every address of address's host in
// turn until one answers, then negotiate TLS.
func (w *wakeDialer) transport(ctx context.Context, network, address string) (net.Conn, error) {
	targets := []string{address}
	if host, port, err := net.SplitHostPort(address); err == nil {
		w.mu.Lock()
		addrs := w.addrs[host]
		w.mu.Unlock()
		if len(addrs) > 0 {
			targets = targets[:0]
			for _, a := range addrs {
				targets = append(targets, net.JoinHostPort(a, port))
			}
		}
	}
	var firstErr error
	for _, target := range targets {
		conn, err := w.dial(ctx, network, target)
		if err != nil {
			if firstErr == nil {
				firstErr = err
			}
			if ctx.Err() != nil {
				break
			}
			continue
		}
		if w.tls == nil {
			return conn, nil
		}
		tc, err := w.startTLS(ctx, conn)
		if err != nil {
			conn.Close()
			return nil, err
		}
		return tc, nil
	}
	return nil, firstErr
}

// errTLSRefused is a server that answers an SSLRequest with "no".
var errTLSRefused = errors.New("server refused TLS connection")

// startTLS negotiates TLS on conn the way pgconn does (an SSLRequest, or
// directly with sslnegotiation=direct).
func (w *wakeDialer) startTLS(ctx context.Context, conn net.Conn) (net.Conn, error) {
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
		defer conn.SetDeadline(time.Time{})
	}
	if !w.direct {
		var req [8]byte
		binary.BigEndian.PutUint32(req[0:], 8)
		binary.BigEndian.PutUint32(req[4:], 80877103)
		if _, err := conn.Write(req[:]); err != nil {
			return nil, fmt.Errorf("tls error: %w", err)
		}
		var ans [1]byte
		if _, err := readFull(conn, ans[:]); err != nil {
			return nil, fmt.Errorf("tls error: %w", err)
		}
		if ans[0] != 'S' {
			return nil, fmt.Errorf("tls error: %w", errTLSRefused)
		}
	}
	tc := tls.Client(conn, w.tls)
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, fmt.Errorf("tls error: %w", err)
	}
	return tc, nil
}

func readFull(conn net.Conn, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		k, err := conn.Read(b[n:])
		n += k
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// maxFirstMessage bounds the server's first message that a wakeConn holds
// back to look at (an ErrorResponse is a few hundred bytes).
const maxFirstMessage = 16 << 10

// wakeConn is the connection pgconn gets on the pgxpool path: until the
// server's first answer it can swap its transport and replay what pgconn
// wrote; afterwards it passes everything through.
type wakeConn struct {
	w        *wakeDialer
	ctx      context.Context // the connect's context: bounds the retries
	network  string
	address  string
	backoff  wakeBackoff
	attempts int
	logged   bool

	mu       sync.Mutex
	cur      net.Conn
	settled  bool      // the server answered: pass through
	written  []byte    // written before settled (the startup message), replayed on a new transport
	deadline time.Time // the last SetDeadline, applied to a new transport

	pending []byte // the server's first message, read ahead, not yet delivered (read side only)
}

// establish makes the first transport, retrying cold-start failures.
func (wc *wakeConn) establish() error {
	for {
		wc.attempts++
		conn, err := wc.w.transport(wc.ctx, wc.network, wc.address)
		if err == nil {
			wc.mu.Lock()
			wc.cur = conn
			wc.mu.Unlock()
			return nil
		}
		if err := wc.retry(err); err != nil {
			return err
		}
	}
}

// retry decides about a failed attempt: nil after the backoff wait if a
// new attempt should follow, else the error to report.
func (wc *wakeConn) retry(err error) error {
	if !coldStart(err) || errors.Is(err, errTLSRefused) {
		return err
	}
	if wc.ctx.Err() != nil {
		return wc.w.c.wakeError(wc.ctx, wc.w.caller, wc.attempts, err)
	}
	if !wc.logged {
		wc.logged = true
		wc.w.c.logger.Info("connector: endpoint waking up, retrying", slog.String("host", wc.w.c.host), slog.String("error", err.Error()))
	}
	if !sleepCtx(wc.ctx, wc.backoff.next()) {
		return wc.w.c.wakeError(wc.ctx, wc.w.caller, wc.attempts, err)
	}
	return nil
}

// reconnect replaces the transport after a cold-start failure and replays
// what pgconn has written.
func (wc *wakeConn) reconnect(cause error) error {
	wc.mu.Lock()
	old := wc.cur
	wc.mu.Unlock()
	old.Close()
	if err := wc.retry(cause); err != nil {
		return err
	}
	for {
		wc.attempts++
		conn, err := wc.w.transport(wc.ctx, wc.network, wc.address)
		if err == nil {
			wc.mu.Lock()
			if !wc.deadline.IsZero() {
				_ = conn.SetDeadline(wc.deadline)
			}
			replay := wc.written
			wc.cur = conn
			wc.mu.Unlock()
			if len(replay) > 0 {
				if _, err = conn.Write(replay); err == nil {
					return nil
				}
			} else {
				return nil
			}
		}
		if err := wc.retry(err); err != nil {
			return err
		}
	}
}

func (wc *wakeConn) conn() net.Conn {
	wc.mu.Lock()
	defer wc.mu.Unlock()
	return wc.cur
}

// Write implements net.Conn. Before the server's first answer a write
// error is left to the read side, which reconnects and replays.
func (wc *wakeConn) Write(b []byte) (int, error) {
	wc.mu.Lock()
	settled := wc.settled
	if !settled {
		wc.written = append(wc.written, b...)
	}
	cur := wc.cur
	wc.mu.Unlock()
	n, err := cur.Write(b)
	if err != nil && !settled && wc.ctx.Err() == nil {
		return len(b), nil
	}
	return n, err
}

// Read implements net.Conn.
func (wc *wakeConn) Read(b []byte) (int, error) {
	if len(wc.pending) > 0 {
		n := copy(b, wc.pending)
		wc.pending = wc.pending[n:]
		return n, nil
	}
	wc.mu.Lock()
	settled, cur := wc.settled, wc.cur
	wc.mu.Unlock()
	if settled {
		return cur.Read(b)
	}
	for {
		msg, err := wc.firstMessage(cur)
		if err == nil {
			wc.mu.Lock()
			wc.settled, wc.written = true, nil
			wc.mu.Unlock()
			wc.pending = msg
			return wc.Read(b)
		}
		if err := wc.reconnect(err); err != nil {
			return 0, err
		}
		cur = wc.conn()
	}
}

// firstMessage reads the server's first message from conn. It returns an
// error for a transport failure or a cold-start ErrorResponse (which the
// caller retries), and the message otherwise.
func (wc *wakeConn) firstMessage(conn net.Conn) ([]byte, error) {
	var header [5]byte
	if _, err := readFull(conn, header[:]); err != nil {
		return nil, err
	}
	size := int(binary.BigEndian.Uint32(header[1:])) - 4
	if header[0] != 'E' || size < 0 || size > maxFirstMessage {
		return header[:], nil // not an error, or not one to look at: pass it on
	}
	msg := make([]byte, 5+size)
	copy(msg, header[:])
	if _, err := readFull(conn, msg[5:]); err != nil {
		return nil, err
	}
	pgErr := parseErrorResponse(msg[5:])
	if f, _ := classifyServerError(pgErr.Code, pgErr.Message); f == failColdStart {
		return nil, pgErr
	}
	return msg, nil
}

// parseErrorResponse reads the SQLSTATE, severity and message of an
// ErrorResponse body.
func parseErrorResponse(body []byte) *pgconn.PgError {
	pgErr := &pgconn.PgError{}
	for _, field := range strings.Split(string(body), "\x00") {
		if len(field) < 2 {
			continue
		}
		switch field[0] {
		case 'S':
			pgErr.Severity = field[1:]
		case 'C':
			pgErr.Code = field[1:]
		case 'M':
			pgErr.Message = field[1:]
		}
	}
	return pgErr
}

// Close implements net.Conn.
func (wc *wakeConn) Close() error { return wc.conn().Close() }

// LocalAddr implements net.Conn.
func (wc *wakeConn) LocalAddr() net.Addr { return wc.conn().LocalAddr() }

// RemoteAddr implements net.Conn (pgconn sends cancel requests there).
func (wc *wakeConn) RemoteAddr() net.Addr { return wc.conn().RemoteAddr() }

// SetDeadline implements net.Conn; the deadline carries over to a new
// transport.
func (wc *wakeConn) SetDeadline(t time.Time) error {
	wc.mu.Lock()
	wc.deadline = t
	cur := wc.cur
	wc.mu.Unlock()
	return cur.SetDeadline(t)
}

// SetReadDeadline implements net.Conn.
func (wc *wakeConn) SetReadDeadline(t time.Time) error { return wc.conn().SetReadDeadline(t) }

// SetWriteDeadline implements net.Conn.
func (wc *wakeConn) SetWriteDeadline(t time.Time) error { return wc.conn().SetWriteDeadline(t) }
