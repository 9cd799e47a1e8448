package lakebasetest

import (
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// The front door and the pooler speak just enough of the PostgreSQL wire
// protocol to do what a starting server and PgBouncer do before the
// startup message is answered: negotiate TLS, read the startup message,
// and send an ErrorResponse or an authentication request.

const (
	codeSSLRequest    = 80877103
	codeGSSENCRequest = 80877104
	codeCancelRequest = 80877102
	protocolV3        = 3 << 16
	maxStartup        = 10000 // PostgreSQL's MAX_STARTUP_PACKET_LENGTH
	handshakeTimeout  = 10 * time.Second
)

var errNotStartup = errors.New("lakebasetest: not a startup message")

// startup is a client's startup message, read after any TLS negotiation.
type startup struct {
	conn   net.Conn // the TLS connection when the client negotiated TLS
	tls    bool
	raw    []byte // the whole message, to replay it to PostgreSQL
	params map[string]string
}

// readStartup answers SSLRequest ('S' and a TLS handshake when tlsCfg is
// set, else 'N') and GSSENCRequest ('N') as PostgreSQL does, and returns the
// startup message that follows. A CancelRequest yields errNotStartup.
func readStartup(c net.Conn, tlsCfg *tls.Config) (*startup, error) {
	s := &startup{conn: c}
	for {
		var hdr [4]byte
		if _, err := io.ReadFull(s.conn, hdr[:]); err != nil {
			return nil, err
		}
		n := int(binary.BigEndian.Uint32(hdr[:]))
		if n < 8 || n > maxStartup {
			return nil, errNotStartup
		}
		body := make([]byte, n-4)
		if _, err := io.ReadFull(s.conn, body); err != nil {
			return nil, err
		}
		switch code := binary.BigEndian.Uint32(body); code {
		case codeSSLRequest:
			if s.tls || tlsCfg == nil {
				if _, err := s.conn.Write([]byte{'N'}); err != nil {
					return nil, err
				}
				continue
			}
			if _, err := s.conn.Write([]byte{'S'}); err != nil {
				return nil, err
			}
			tc := tls.Server(s.conn, tlsCfg)
			if err := tc.Handshake(); err != nil {
				return nil, err
			}
			s.conn, s.tls = tc, true
		case codeGSSENCRequest:
			if _, err := s.conn.Write([]byte{'N'}); err != nil {
				return nil, err
			}
		case protocolV3:
			s.raw = append(hdr[:], body...)
			s.params = map[string]string{}
			kv := strings.Split(string(body[4:]), "\x00")
			for i := 0; i+1 < len(kv); i += 2 {
				if kv[i] == "" {
					break
				}
				s.params[kv[i]] = kv[i+1]
			}
			return s, nil
		default:
			return nil, errNotStartup
		}
	}
}

// message builds a backend message of type typ.
func message(typ byte, body []byte) []byte {
	m := make([]byte, 5, 5+len(body))
	m[0] = typ
	binary.BigEndian.PutUint32(m[1:], uint32(4+len(body)))
	return append(m, body...)
}

// errorResponse is an ErrorResponse message.
func errorResponse(severity, code, msg string) []byte {
	var b bytes.Buffer
	for _, f := range []struct {
		t byte
		v string
	}{{'S', severity}, {'V', severity}, {'C', code}, {'M', msg}} {
		b.WriteByte(f.t)
		b.WriteString(f.v)
		b.WriteByte(0)
	}
	b.WriteByte(0)
	return message('E', b.Bytes())
}

// readMessage reads one frontend message (after the startup message).
func readMessage(r io.Reader) (typ byte, body []byte, err error) {
	var hdr [5]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, nil, err
	}
	n := int(binary.BigEndian.Uint32(hdr[1:]))
	if n < 4 || n > 1<<20 {
		return 0, nil, fmt.Errorf("lakebasetest: message of %d bytes", n)
	}
	body = make([]byte, n-4)
	_, err = io.ReadFull(r, body)
	return hdr[0], body, err
}

// server is a loopback TCP listener whose every connection (accepted or
// dialled on a client's behalf) and goroutine is tracked, so close leaves
// nothing behind. Forwarded pairs are also tracked, to cut them on suspend,
// and the time of the last byte through them is recorded.
type server struct {
	ln     net.Listener
	handle func(net.Conn)

	mu       sync.Mutex
	conns    map[net.Conn]struct{}
	pairs    map[*pair]struct{}
	closed   bool
	wg       sync.WaitGroup
	lastSeen atomic.Int64 // unix nanos of the last accept or forwarded byte
}

type pair struct{ a, b net.Conn }

func newServer(ln net.Listener, handle func(net.Conn)) *server {
	s := &server{ln: ln, handle: handle, conns: map[net.Conn]struct{}{}, pairs: map[*pair]struct{}{}}
	s.touch()
	return s
}

// start starts accepting; the owner calls it once its own fields are set.
func (s *server) start() {
	s.wg.Add(1)
	go s.accept()
}

func (s *server) port() int { return s.ln.Addr().(*net.TCPAddr).Port }

func (s *server) touch() { s.lastSeen.Store(time.Now().UnixNano()) }

func (s *server) accept() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.touch()
		if !s.track(c) {
			return
		}
		if !s.spawn(func() {
			defer s.untrack(c)
			s.handle(c)
		}) {
			s.untrack(c)
			return
		}
	}
}

// track registers c; when the server is closed it closes c and says so.
func (s *server) track(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		_ = c.Close()
		return false
	}
	s.conns[c] = struct{}{}
	return true
}

// untrack closes c and forgets it.
func (s *server) untrack(c net.Conn) {
	_ = c.Close()
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

// spawn runs f in a tracked goroutine unless the server is closed.
func (s *server) spawn(f func()) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		f()
	}()
	return true
}

// forward copies between the tracked connections a and b until either
// side ends, then closes both. It blocks.
func (s *server) forward(a, b net.Conn) {
	p := &pair{a: a, b: b}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.pairs[p] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.pairs, p)
		s.mu.Unlock()
	}()
	done := make(chan struct{})
	if !s.spawn(func() {
		defer close(done)
		s.copy(b, a)
	}) {
		return
	}
	s.copy(a, b)
	<-done
}

// copy copies src to dst, recording activity, and closes both at the end
// so the opposite copy ends too.
func (s *server) copy(dst, src net.Conn) {
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			s.touch()
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// cut closes every forwarded pair and returns how many there were.
func (s *server) cut() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	for p := range s.pairs {
		_ = p.a.Close()
		_ = p.b.Close()
	}
	return len(s.pairs)
}

// close stops accepting, closes every connection and waits for every
// goroutine. It is idempotent.
func (s *server) close() {
	s.mu.Lock()
	s.closed = true
	for c := range s.conns {
		_ = c.Close()
	}
	s.mu.Unlock()
	_ = s.ln.Close()
	s.wg.Wait()
}
