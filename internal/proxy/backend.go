package proxy

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"crypto/tls"
	"database/sql/driver"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"
)

// backend is a logged-in Lakebase connection taken over from pgx.
type backend struct {
	conn     net.Conn
	pid      uint32
	secret   []byte
	params   map[string]string
	txStatus byte

	// where cancel requests go
	network, address string
	tlsConfig        *tls.Config
}

// loginBackend opens a new physical connection through the connector (its
// whole login path: current token, TLS policy, cold-start retries,
// refused-login recovery), then takes the raw connection from pgx.
func (s *Server) loginBackend(ctx context.Context, _ *sessionParams) (*backend, error) {
	dc, err := s.conn.Connect(ctx)
	if err != nil {
		return nil, err
	}
	pc, err := pgConnOf(dc)
	if err != nil {
		_ = dc.Close()
		return nil, err
	}
	if err := pc.SyncConn(ctx); err != nil {
		_ = dc.Close()
		return nil, fmt.Errorf("proxy: sync the new backend connection: %w", err)
	}
	hc, err := pc.Hijack()
	if err != nil {
		_ = dc.Close()
		return nil, fmt.Errorf("proxy: take over the backend connection: %w", err)
	}
	b := &backend{conn: hc.Conn, pid: hc.PID, secret: hc.SecretKey, params: hc.ParameterStatuses, txStatus: hc.TxStatus, tlsConfig: hc.TLSConfig}
	if ra := hc.Conn.RemoteAddr(); ra != nil && ra.Network() != "unix" {
		b.network, b.address = ra.Network(), ra.String()
	} else {
		b.network, b.address = pgconn.NetworkAddress(hc.Config.Host, hc.Config.Port)
	}
	return b, nil
}

// pgConnOf finds the pgx connection under a database/sql driver
// connection (the connector hands out pgx stdlib connections).
func pgConnOf(dc driver.Conn) (*pgconn.PgConn, error) {
	for range 8 {
		switch v := dc.(type) {
		case *stdlib.Conn:
			return v.Conn().PgConn(), nil
		case interface{ Raw() driver.Conn }:
			dc = v.Raw()
		default:
			return nil, fmt.Errorf("proxy: the connector returned a %T, not a pgx connection", dc)
		}
	}
	return nil, errors.New("proxy: too many layers around the pgx connection")
}

// sendCancel delivers a CancelRequest for b's backend over a fresh
// connection, encrypted the way the session is (SSLRequest, then TLS with
// the session's configuration), and waits for the server to close it.
func sendCancel(ctx context.Context, b *backend) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, b.network, b.address)
	if err != nil {
		return fmt.Errorf("proxy: cancel: dial %s: %w", b.address, err)
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	conn := c
	if b.tlsConfig != nil {
		var req [8]byte
		binary.BigEndian.PutUint32(req[0:4], 8)
		binary.BigEndian.PutUint32(req[4:8], codeSSL)
		if _, err := c.Write(req[:]); err != nil {
			return fmt.Errorf("proxy: cancel: %w", err)
		}
		var ans [1]byte
		if _, err := io.ReadFull(c, ans[:]); err != nil {
			return fmt.Errorf("proxy: cancel: read SSL answer: %w", err)
		}
		if ans[0] != 'S' {
			return errors.New("proxy: cancel: the server refused TLS for the cancel request")
		}
		tc := tls.Client(c, b.tlsConfig)
		if err := tc.HandshakeContext(ctx); err != nil {
			return fmt.Errorf("proxy: cancel: TLS: %w", err)
		}
		conn = tc
	}
	msg := make([]byte, 12+len(b.secret))
	binary.BigEndian.PutUint32(msg[0:4], uint32(len(msg)))
	binary.BigEndian.PutUint32(msg[4:8], codeCancel)
	binary.BigEndian.PutUint32(msg[8:12], b.pid)
	copy(msg[12:], b.secret)
	if _, err := conn.Write(msg); err != nil {
		return fmt.Errorf("proxy: cancel: write: %w", err)
	}
	// The server closes the connection once it has handled the request.
	_, _ = io.Copy(io.Discard, io.LimitReader(conn, 1<<10))
	return nil
}

// forwardCancel maps a client's CancelRequest (the proxy's key) to the
// backend session it names and delivers it. Unknown or wrong keys are
// dropped without an answer, as PostgreSQL does.
func (s *Server) forwardCancel(p packet) {
	b := s.keys.lookup(p.cancelPID, p.cancelKey)
	if b == nil {
		s.logger.Debug("proxy: cancel request with an unknown key ignored")
		return
	}
	ctx, cancel := context.WithTimeout(s.ctx, cancelTimeout)
	defer cancel()
	if err := sendCancel(ctx, b); err != nil {
		s.logger.Warn("proxy: cancel request not delivered", slog.String("error", err.Error()))
		return
	}
	s.cancels.Add(1)
}

// keyTable maps the BackendKeyData the proxy issued to backend sessions.
type keyTable struct {
	mu sync.Mutex
	m  map[uint32]keyEntry
}

type keyEntry struct {
	secret [4]byte
	b      *backend
}

func newKeyTable() *keyTable { return &keyTable{m: map[uint32]keyEntry{}} }

// issue returns a new process id (never 0, unique among open sessions) and
// a random secret for b.
func (t *keyTable) issue(b *backend) (uint32, []byte) {
	var e keyEntry
	e.b = b
	_, _ = rand.Read(e.secret[:])
	t.mu.Lock()
	defer t.mu.Unlock()
	for {
		var r [4]byte
		_, _ = rand.Read(r[:])
		pid := binary.BigEndian.Uint32(r[:]) & 0x7fffffff // positive as an int32, as PostgreSQL's
		if _, used := t.m[pid]; pid != 0 && !used {
			t.m[pid] = e
			return pid, e.secret[:]
		}
	}
}

func (t *keyTable) remove(pid uint32) {
	if pid == 0 {
		return
	}
	t.mu.Lock()
	delete(t.m, pid)
	t.mu.Unlock()
}

// lookup returns the backend of a key, comparing secrets in constant time.
func (t *keyTable) lookup(pid uint32, secret []byte) *backend {
	t.mu.Lock()
	e, ok := t.m[pid]
	t.mu.Unlock()
	if !ok || len(secret) != len(e.secret) || subtle.ConstantTimeCompare(secret, e.secret[:]) != 1 {
		return nil
	}
	return e.b
}
