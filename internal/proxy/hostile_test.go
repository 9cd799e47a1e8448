package proxy

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/lakebase-go/lakebase/lakebasetest"
)

// readError reads the client's view of a refusal: the first
// ErrorResponse, or nil when the proxy just closed the connection.
func readError(t testing.TB, c net.Conn) *pgproto3.ErrorResponse {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	fe := pgproto3.NewFrontend(c, io.Discard)
	for {
		m, err := fe.Receive()
		if err != nil {
			return nil
		}
		switch m := m.(type) {
		case *pgproto3.ErrorResponse:
			cp := *m
			return &cp
		case *pgproto3.ReadyForQuery:
			t.Fatal("the session was admitted")
		}
	}
}

// TestHostileClients: malformed, oversized, truncated and unknown startups
// get an error or a close and never a backend login, while a real session
// goes on unaffected.
func TestHostileClients(t *testing.T) {
	e := lakebasetest.Start(t)
	h := startProxy(t, e, func(c *Config) { c.HandshakeTimeout = time.Second })
	role := h.role()
	good := h.mustConnect(t.Context())
	logins := e.Logins(role)

	ssl := requestBytes(codeSSL)
	cases := []struct {
		name string
		send []byte
		code string // "" = a close without a message is fine
	}{
		{"random bytes", []byte("\x13\x37garbage that is not a protocol at all"), "08P01"},
		{"HTTP request", []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), "08P01"},
		{"huge length", binary.BigEndian.AppendUint32(nil, 1<<31-1), "08P01"},
		{"truncated startup", startupBytes(3, 0, "user", role)[:12], ""},
		{"protocol 2.0", startupBytes(2, 0, "user", role), "0A000"},
		{"protocol 4.0", startupBytes(4, 0, "user", role), "0A000"},
		{"duplicate parameter", startupBytes(3, 0, "user", role, "user", role), "08P01"},
		{"two SSL requests", append(append([]byte(nil), ssl...), ssl...), "08P01"},
		{"replication", startupBytes(3, 0, "user", role, "replication", "database"), "0A000"},
		{"wrong user", startupBytes(3, 0, "user", "mallory@example.com"), "28000"},
		{"unknown cancel key", append(binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, 16), codeCancel), 7), 1, 2, 3, 4), ""},
		{"silence", nil, ""},
	}
	var wg sync.WaitGroup
	var goodMu sync.Mutex
	for _, tc := range cases {
		wg.Go(func() {
			c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", h.port))
			if err != nil {
				t.Errorf("%s: dial: %v", tc.name, err)
				return
			}
			defer c.Close()
			if _, err := c.Write(tc.send); err != nil {
				t.Errorf("%s: write: %v", tc.name, err)
				return
			}
			// SSL answers come first.
			if len(tc.send) >= 8 && binary.BigEndian.Uint32(tc.send[4:8]) == codeSSL {
				var b [1]byte
				if _, err := io.ReadFull(c, b[:]); err != nil || b[0] != 'N' {
					t.Errorf("%s: SSL answer %q, %v", tc.name, b[0], err)
				}
			}
			er := readError(t, c)
			switch {
			case tc.code == "" && er != nil && tc.name == "silence":
				t.Errorf("%s: got %v", tc.name, er)
			case tc.code != "" && (er == nil || er.Code != tc.code):
				t.Errorf("%s: got %+v, want SQLSTATE %s", tc.name, er, tc.code)
			}
			if tc.name == "wrong user" && er != nil && (!strings.Contains(er.Message, role) || !strings.Contains(er.Hint, "--user-any")) {
				t.Errorf("wrong user: message %q hint %q; want the proxy's role and --user-any", er.Message, er.Hint)
			}
			// Meanwhile the real session works.
			goodMu.Lock()
			defer goodMu.Unlock()
			var n int
			if err := good.QueryRow(t.Context(), "select 1").Scan(&n); err != nil {
				t.Errorf("the real session during %s: %v", tc.name, err)
			}
		})
	}
	wg.Wait()
	if got := e.Logins(role); got != logins {
		t.Errorf("%d backend logins for hostile clients, want 0", got-logins)
	}
	if s := h.s.Stats(); s.Open != 1 {
		t.Errorf("stats after the hostile clients: %+v, want only the real session open", s)
	}

	// A wrong user through a real driver.
	_, err := pgx.Connect(t.Context(), fmt.Sprintf("host=127.0.0.1 port=%d user=someone_else dbname=%s sslmode=disable", h.port, e.Database()))
	if pgCode(err) != "28000" || !strings.Contains(err.Error(), role) {
		t.Errorf("wrong user: %v, want 28000 naming %s", err, role)
	}
	// Protocol 3.2 (pgx's max_protocol_version) is served as 3.0.
	c, err := h.connect(t.Context(), "max_protocol_version=3.2")
	if err != nil {
		t.Fatalf("protocol 3.2 client: %v", err)
	}
	_ = c.Close(context.Background())
}

// TestUserAny: with UserAny any user name is accepted, and the session is
// still the proxy's role.
func TestUserAny(t *testing.T) {
	e := lakebasetest.Start(t)
	h := startProxy(t, e, func(c *Config) { c.UserAny = true })
	c, err := pgx.Connect(t.Context(), fmt.Sprintf("host=127.0.0.1 port=%d user=whoever dbname=%s sslmode=disable", h.port, e.Database()))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	var who string
	if err := c.QueryRow(t.Context(), "select current_user").Scan(&who); err != nil || who != h.role() {
		t.Errorf("current_user %q, %v; want the proxy's role", who, err)
	}
}

// TestMaxConnections: clients over the limit get 53300; cancel requests
// still get through; a freed slot admits the next client.
func TestMaxConnections(t *testing.T) {
	e := lakebasetest.Start(t)
	h := startProxy(t, e, func(c *Config) { c.MaxConnections = 2 })
	a := h.mustConnect(t.Context())
	b := h.mustConnect(t.Context())
	for range 3 {
		_, err := h.connect(t.Context(), "")
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || pe.Code != "53300" || !strings.Contains(pe.Hint, "--max-connections") {
			t.Fatalf("third client: %v, want 53300 with a hint naming --max-connections", err)
		}
	}
	// A query of a session at the limit can still be cancelled.
	errc := make(chan error, 1)
	go func() { _, err := a.Exec(context.Background(), "select pg_sleep(30)"); errc <- err }()
	eventually(t, 10*time.Second, "pg_sleep running", func() bool { return backends(t, e, h.role(), "select pg_sleep") == 1 })
	if err := a.PgConn().CancelRequest(t.Context()); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if pgCode(err) != "57014" {
			t.Errorf("cancelled at the limit: %v, want 57014", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("cancel at the limit not delivered")
	}
	if st := h.s.Stats(); st.OverLimit != 3 {
		t.Errorf("over-limit count %d, want 3", st.OverLimit)
	}
	_ = b.Close(context.Background())
	eventually(t, 5*time.Second, "slot freed", func() bool { return h.s.Stats().Open == 1 })
	c, err := h.connect(t.Context(), "")
	if err != nil {
		t.Fatalf("client after a slot was freed: %v", err)
	}
	_ = c.Close(context.Background())
}

// TestNonLoopbackListen: listening beyond loopback needs the flag and a
// client password, and then every client must give the password.
func TestNonLoopbackListen(t *testing.T) {
	e := lakebasetest.Start(t)
	ctx := t.Context()
	cc := connectorConfig(t, e, nil)
	for _, tc := range []struct {
		name    string
		cfg     Config
		setting string
	}{
		{"no flag", Config{Connector: cc, Listen: []string{"0.0.0.0:0"}}, "--allow-non-loopback"},
		{"all interfaces", Config{Connector: cc, Listen: []string{":0"}}, "--allow-non-loopback"},
		{"flag without password", Config{Connector: cc, Listen: []string{"0.0.0.0:0"}, AllowNonLoopback: true}, "--client-password-file"},
		{"second address", Config{Connector: cc, Listen: []string{"127.0.0.1:0", "0.0.0.0:0"}}, "--allow-non-loopback"},
	} {
		s, err := New(ctx, tc.cfg)
		var ce *ConfigError
		if err == nil {
			_ = s.Close()
			t.Errorf("%s: started", tc.name)
			continue
		}
		if !errors.As(err, &ce) || !strings.Contains(err.Error(), tc.setting) {
			t.Errorf("%s: %v, want a ConfigError naming %s", tc.name, err, tc.setting)
		}
	}
	if e.Calls(lakebasetest.RouteCredentials) != 0 {
		t.Errorf("a refused start minted credentials")
	}

	const pw = "correct horse battery staple"
	logs := &syncBuffer{}
	h := startProxy(t, e, func(c *Config) {
		c.Listen = []string{"0.0.0.0:0"}
		c.AllowNonLoopback = true
		c.ClientPassword = pw
	})
	if !strings.Contains(h.logs.String(), "every client must authenticate with the client password") {
		t.Errorf("the start does not say that clients must authenticate:\n%s", h.logs.String())
	}
	logins := e.Logins(h.role())
	for _, bad := range []string{"", "password=wrong"} {
		_, err := h.connect(ctx, bad)
		if bad == "" && err == nil || bad != "" && pgCode(err) != "28P01" {
			t.Errorf("password %q: %v, want a refusal (28P01)", bad, err)
		}
	}
	if got := e.Logins(h.role()); got != logins {
		t.Errorf("%d backend logins for clients without the password", got-logins)
	}
	c, err := h.connect(ctx, "password='"+pw+"'")
	if err != nil {
		t.Fatalf("pgx with the client password (SCRAM-SHA-256): %v", err)
	}
	_ = c.Close(context.Background())
	out, err := h.psql(ctx, []string{"PGPASSWORD=" + pw}, "-c", "select current_user")
	if err != nil || out != h.role() {
		t.Fatalf("psql with PGPASSWORD: %q, %v", out, err)
	}
	noSecret(t, "logs", h.logs.String()+logs.String(), pw)
}
