package proxy

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
)

// startupBytes encodes a StartupMessage of version major.minor.
func startupBytes(major, minor uint16, kv ...string) []byte {
	body := binary.BigEndian.AppendUint32(nil, uint32(major)<<16|uint32(minor))
	for _, s := range kv {
		body = append(append(body, s...), 0)
	}
	body = append(body, 0)
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(body)+4)), body...)
}

func requestBytes(code uint32) []byte {
	return binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, 8), code)
}

func TestParsePacket(t *testing.T) {
	for _, tc := range []struct {
		name   string
		in     []byte
		kind   packetKind
		params int
		bad    bool
	}{
		{"startup", startupBytes(3, 0, "user", "u", "database", "d"), kindStartup, 2, false},
		{"startup 3.2", startupBytes(3, 2, "user", "u"), kindStartup, 1, false},
		{"no parameters", startupBytes(3, 0), kindStartup, 0, false},
		{"ssl", requestBytes(codeSSL), kindSSL, 0, false},
		{"gssenc", requestBytes(codeGSSENC), kindGSSENC, 0, false},
		{"cancel", append(binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, 16), codeCancel), 42), 1, 2, 3, 4), kindCancel, 0, false},
		{"protocol 2", startupBytes(2, 0, "user", "u"), kindStartup, 0, false},
		{"duplicate parameter", startupBytes(3, 0, "user", "u", "user", "v"), 0, 0, true},
		{"empty name", startupBytes(3, 0, "", "v"), 0, 0, true},
		{"unterminated", startupBytes(3, 0, "user", "u")[:14], 0, 0, true},
		{"missing value", append(binary.BigEndian.AppendUint32(nil, 14), 0, 3, 0, 0, 'u', 's', 'e', 'r', 0, 0), 0, 0, true},
		{"ssl with trailing bytes", append(binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, 9), codeSSL), 1), 0, 0, true},
		{"huge length", binary.BigEndian.AppendUint32(nil, 1<<30), 0, 0, true},
		{"negative length", binary.BigEndian.AppendUint32(nil, 0xffffffff), 0, 0, true},
		{"short length", binary.BigEndian.AppendUint32(nil, 4), 0, 0, true},
		{"truncated", startupBytes(3, 0, "user", "u")[:10], 0, 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Fix up the length word where the case cut the body.
			in := tc.in
			p, err := readPacket(bytes.NewReader(in))
			if tc.bad {
				if err == nil {
					t.Fatalf("accepted: %+v", p)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if p.kind != tc.kind || len(p.params) != tc.params {
				t.Errorf("got kind %d with %d params, want %d with %d", p.kind, len(p.params), tc.kind, tc.params)
			}
		})
	}
	// readPacket never reads past the packet.
	r := bytes.NewReader(append(requestBytes(codeSSL), 0x16, 0x03, 0x01))
	if _, err := readPacket(r); err != nil || r.Len() != 3 {
		t.Errorf("read ahead: %d bytes left, %v", r.Len(), err)
	}
}

func TestTailBytes(t *testing.T) {
	var tb tailBytes
	for _, chunk := range [][]byte{[]byte("Q\x00\x00\x00\x05;"), {'X'}, {0, 0}, {0, 4}} {
		tb.add(chunk)
	}
	if !tb.isTerminate() {
		t.Errorf("terminate split over three writes not seen: %v", tb.b)
	}
	tb.add([]byte{'S', 0, 0, 0, 4})
	if tb.isTerminate() {
		t.Error("Sync taken for Terminate")
	}
	var short tailBytes
	short.add([]byte{0, 0, 4})
	if short.isTerminate() {
		t.Error("three bytes taken for Terminate")
	}
}

// fuzzServer is a Server without a connector whose backend login is
// stubbed and recorded.
func fuzzServer(role string, login func(sp *sessionParams) error) *Server {
	s := &Server{cfg: Config{HandshakeTimeout: 2 * time.Second}.withDefaults(), logger: slog.New(slog.DiscardHandler),
		sessions: map[*session]struct{}{}, keys: newKeyTable(), role: role, db: "db"}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.login = func(_ context.Context, sp *sessionParams) (*backend, error) { return nil, login(sp) }
	return s
}

// oracleLogin says whether data is a client startup that must lead to a
// backend login, judged by pgx's own pgproto3 decoder: at most two
// negotiation requests (SSL once), then a protocol 3.0 StartupMessage
// naming role or no user. ok is false where pgproto3 cannot judge
// (protocol 3.1, 3.3 and later, which the proxy accepts with
// NegotiateProtocolVersion).
func oracleLogin(data []byte, role string) (login, ok bool) {
	be := pgproto3.NewBackend(bytes.NewReader(data), io.Discard)
	ssl := false
	off := 0 // where the message being read starts (after 8-byte requests)
	for range 3 {
		m, err := be.ReceiveStartupMessage()
		if err != nil {
			// pgproto3 refuses 3.x startups with x > 0, which the proxy
			// serves as 3.0: the oracle cannot judge those.
			if len(data) >= off+8 && binary.BigEndian.Uint32(data[off+4:off+8])>>16 == 3 {
				return false, false
			}
			return false, true
		}
		switch m := m.(type) {
		case *pgproto3.SSLRequest:
			if ssl {
				return false, true
			}
			ssl = true
			off += 8
		case *pgproto3.GSSEncRequest:
			off += 8
		case *pgproto3.StartupMessage:
			if m.ProtocolVersion != pgproto3.ProtocolVersion30 {
				return false, false
			}
			u := m.Parameters["user"]
			return u == "" || u == role, false // duplicates and replication: the proxy is stricter
		default:
			return false, true
		}
	}
	return false, true
}

// FuzzStartup feeds arbitrary bytes to a session as a client's first
// bytes: the session must end (an error or a close, never a panic or a
// hang) and log in to the backend only for a well-formed startup naming
// the proxy's role.
func FuzzStartup(f *testing.F) {
	const role = "sp-role"
	f.Add(startupBytes(3, 0, "user", role, "database", "d"))
	f.Add(append(requestBytes(codeSSL), startupBytes(3, 0, "user", role)...))
	f.Add(append(requestBytes(codeGSSENC), append(requestBytes(codeSSL), startupBytes(3, 0, "user", role, "application_name", "x")...)...))
	f.Add(startupBytes(3, 0, "user", "other"))
	f.Add(startupBytes(3, 1, "user", role, "_pq_.x", "1"))
	f.Add(startupBytes(2, 0, "user", role))
	f.Add(startupBytes(1234, 5679))
	f.Add(append(requestBytes(codeSSL), requestBytes(codeSSL)...))
	f.Add(binary.BigEndian.AppendUint32(nil, 0x7fffffff))
	f.Add([]byte{0, 0, 0, 16, 4, 210, 22, 46, 0, 0, 0, 1, 1, 2, 3, 4})
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		var mu sync.Mutex
		logins := 0
		s := fuzzServer(role, func(sp *sessionParams) error {
			mu.Lock()
			logins++
			mu.Unlock()
			return errors.New("stub: no backend in the fuzz test")
		})
		defer s.cancel()
		client, server := net.Pipe()
		ss := newSession(s, server)
		done := make(chan struct{})
		go func() {
			defer close(done)
			ss.serve()
			_ = server.Close()
		}()
		drained := make(chan struct{})
		go func() { defer close(drained); _, _ = io.Copy(io.Discard, client) }()
		_ = client.SetWriteDeadline(time.Now().Add(5 * time.Second))
		_, _ = client.Write(data)
		_ = client.Close()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("the session did not end")
		}
		<-drained
		want, judged := oracleLogin(data, role)
		if logins > 1 {
			t.Fatalf("%d backend logins for one client", logins)
		}
		if logins == 1 && judged && !want {
			t.Fatalf("backend login for a startup pgproto3 refuses: %q", data)
		}
		if logins == 1 && !judged {
			// Our own reading: it must be a 3.x startup with the right user.
			p, err := readPacket(bytes.NewReader(skipRequests(data)))
			u, _ := p.get("user")
			if err != nil || p.kind != kindStartup || p.major != 3 || (u != "" && u != role) {
				t.Fatalf("backend login for %q (%+v, %v)", data, p, err)
			}
		}
	})
}

// skipRequests drops leading SSL/GSSENC requests.
func skipRequests(data []byte) []byte {
	for len(data) >= 8 && binary.BigEndian.Uint32(data[:4]) == 8 {
		c := binary.BigEndian.Uint32(data[4:8])
		if c != codeSSL && c != codeGSSENC {
			break
		}
		data = data[8:]
	}
	return data
}
