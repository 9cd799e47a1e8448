package lakebasetest

import (
	"crypto/tls"
	"encoding/base64"
	"encoding/binary"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// poolerAddr is the loopback address the pooled host listens on: all of
// 127/8 is loopback on Linux, so the pooler gets a host of its own, as the
// real "-pooler" host name is distinct from the endpoint's host.
const poolerAddr = "127.0.0.2"

// pooler stands for Lakebase's built-in connection pooler (PgBouncer,
// transaction mode), which accepts only native Postgres password roles.
// It terminates TLS with the emulator's certificate like PgBouncer does,
// reads the startup message, and then:
//   - for the admin role (a native scram password), relays the login and
//     the session to PostgreSQL;
//   - for any other role (an OAuth token login), runs the SCRAM exchange
//     PgBouncer runs for a user it does not know and fails it with
//     PgBouncer's error: FATAL 08P01 "SASL authentication failed".
//
// It does not pool (each client gets its own server connection), and it is
// not subject to the front door's suspend.
type pooler struct {
	srv      *server
	host     string
	backend  string
	tlsCfg   *tls.Config
	refusals atomic.Int64
}

func startPooler(preferPort, backendPort int, tlsCfg *tls.Config) (*pooler, error) {
	host := poolerAddr
	ln, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(preferPort)))
	if err != nil {
		ln, err = net.Listen("tcp", net.JoinHostPort(host, "0"))
	}
	if err != nil { // no 127.0.0.2 (not Linux): fall back to another port
		host = "127.0.0.1"
		if ln, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			return nil, err
		}
	}
	p := &pooler{host: host, backend: net.JoinHostPort("127.0.0.1", strconv.Itoa(backendPort)), tlsCfg: tlsCfg}
	p.srv = newServer(ln, p.handle)
	p.srv.start()
	return p, nil
}

func (p *pooler) handle(c net.Conn) {
	_ = c.SetDeadline(time.Now().Add(handshakeTimeout))
	s, err := readStartup(c, p.tlsCfg)
	if err != nil {
		return
	}
	if s.params["user"] != adminRole {
		p.refusals.Add(1)
		p.refuseSCRAM(s.conn)
		return
	}
	b, err := net.DialTimeout("tcp", p.backend, handshakeTimeout)
	if err != nil {
		_, _ = s.conn.Write(errorResponse("FATAL", "08006", "pooler: server connection failed"))
		return
	}
	if !p.srv.track(b) {
		return
	}
	defer p.srv.untrack(b)
	var backend net.Conn = b
	if s.tls {
		// Our own loopback server, whose certificate the client has just
		// verified through us (same certificate): no verification here.
		var req [8]byte
		binary.BigEndian.PutUint32(req[:4], 8)
		binary.BigEndian.PutUint32(req[4:], codeSSLRequest)
		var ans [1]byte
		if _, err := b.Write(req[:]); err != nil {
			return
		}
		if _, err := b.Read(ans[:]); err != nil || ans[0] != 'S' {
			_, _ = s.conn.Write(errorResponse("FATAL", "08006", "pooler: server refused TLS"))
			return
		}
		backend = tls.Client(b, &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // see above
	}
	if _, err := backend.Write(s.raw); err != nil {
		return
	}
	_ = c.SetDeadline(time.Time{})
	p.srv.forward(s.conn, backend)
}

// refuseSCRAM asks for SCRAM-SHA-256, answers the client-first message with
// a plausible server-first message, and fails the client-final message
// with PgBouncer's error for a user it cannot authenticate.
func (p *pooler) refuseSCRAM(c net.Conn) {
	var sasl []byte
	sasl = binary.BigEndian.AppendUint32(sasl, 10) // AuthenticationSASL
	sasl = append(sasl, "SCRAM-SHA-256\x00\x00"...)
	if _, err := c.Write(message('R', sasl)); err != nil {
		return
	}
	typ, body, err := readMessage(c)
	if err != nil || typ != 'p' {
		return
	}
	// SASLInitialResponse: mechanism\0, int32 length, client-first-message.
	nonce := ""
	if i := strings.IndexByte(string(body), 0); i >= 0 && len(body) >= i+5 {
		for _, attr := range strings.Split(string(body[i+5:]), ",") {
			if strings.HasPrefix(attr, "r=") {
				nonce = attr[2:]
			}
		}
	}
	var cont []byte
	cont = binary.BigEndian.AppendUint32(cont, 11) // AuthenticationSASLContinue
	cont = append(cont, "r="+nonce+randomString(18)+",s="+base64.StdEncoding.EncodeToString([]byte(randomString(12)))+",i=4096"...)
	if _, err := c.Write(message('R', cont)); err != nil {
		return
	}
	if typ, _, err := readMessage(c); err != nil || typ != 'p' {
		return
	}
	_, _ = c.Write(errorResponse("FATAL", "08P01", "SASL authentication failed"))
}

func (p *pooler) close() { p.srv.close() }
