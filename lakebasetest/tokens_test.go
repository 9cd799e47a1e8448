package lakebasetest

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// ldapRoundTrip sends one message to the responder on port and returns the
// raw reply.
func ldapRoundTrip(t *testing.T, port int, msg []byte) []byte {
	t.Helper()
	c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(port))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(msg); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	m, err := readBER(bufio.NewReader(c))
	if err != nil {
		t.Fatal(err)
	}
	return appendBER(nil, m.tag, m.value)
}

func TestMakeJWTShapeAndSize(t *testing.T) {
	exp := time.Now().Add(time.Hour)
	for _, size := range []int{700, 1024, 1025, 1026, 1027, 2048, 4099, 16384} {
		tok := makeJWT("alice@example.com", time.Now(), exp, size)
		if len(tok) != size {
			t.Errorf("size %d: got %d bytes", size, len(tok))
		}
		parts := strings.Split(tok, ".")
		if len(parts) != 3 {
			t.Fatalf("size %d: %d parts", size, len(parts))
		}
		for i, p := range parts {
			if _, err := base64.RawURLEncoding.DecodeString(p); err != nil {
				t.Errorf("size %d: part %d is not base64url: %v", size, i, err)
			}
		}
		if !strings.HasPrefix(parts[2], tokenPrefix) {
			t.Errorf("signature does not start with the leak marker %q", tokenPrefix)
		}
		raw, _ := base64.RawURLEncoding.DecodeString(parts[1])
		var c claims
		if err := json.Unmarshal(raw, &c); err != nil || c.Sub != "alice@example.com" || c.Exp != exp.Unix() {
			t.Errorf("size %d: claims %+v, %v", size, c, err)
		}
	}
}

func TestTokenSizeOption(t *testing.T) {
	if _, err := New(t.Context(), WithTokenSize(100)); err == nil || !strings.Contains(err.Error(), "WithTokenSize(100)") {
		t.Errorf("WithTokenSize(100): %v", err)
	}
	e := Start(t, WithTokenSize(8000))
	sp := e.ServicePrincipal()
	tok := e.MintToken(sp, time.Hour)
	if len(tok) != 8000 {
		t.Fatalf("token is %d bytes", len(tok))
	}
	if err := login(t.Context(), e, sp, tok, "verify-full"); err != nil {
		t.Errorf("8000-byte token: %v", err)
	}
}

// TestTwoKBToken is the acceptance test: a 2 KB token logs in, the
// same token for another role does not, an expired one does not; and the
// refusals carry PostgreSQL's LDAP wording and SQLSTATE 28000.
func TestTwoKBToken(t *testing.T) {
	e := Start(t, WithTokenSize(2048))
	ctx := t.Context()
	sp := e.ServicePrincipal()
	if _, err := e.AddUser(ctx, "bob@example.com"); err != nil {
		t.Fatal(err)
	}
	tok := e.MintToken(sp, time.Hour)
	if len(tok) != 2048 {
		t.Fatalf("token is %d bytes", len(tok))
	}
	if err := login(ctx, e, sp, tok, "verify-full"); err != nil {
		t.Fatalf("2 KB token: %v", err)
	}
	for what, err := range map[string]error{
		"another role":  login(ctx, e, "bob@example.com", tok, "verify-full"),
		"expired token": login(ctx, e, sp, e.MintToken(sp, -time.Second), "verify-full"),
	} {
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "28000" || !strings.Contains(pgErr.Message, "LDAP authentication failed for user") {
			t.Errorf("%s: want 28000 LDAP authentication failed, got %v", what, err)
		} else {
			t.Logf("%s: %s %s: %s", what, pgErr.Severity, pgErr.Code, pgErr.Message)
		}
		if err != nil && strings.Contains(err.Error(), tokenPrefix) {
			t.Errorf("%s: the error shows the token", what)
		}
	}
	if e.Rejects("bob@example.com") != 1 || e.Logins(sp) != 1 || e.Rejects(sp) != 1 {
		t.Errorf("counters: bob rejects %d, sp logins %d rejects %d", e.Rejects("bob@example.com"), e.Logins(sp), e.Rejects(sp))
	}
}

// TestRoleMissing records what PostgreSQL says when a valid token's role
// does not exist (the identity has no Postgres role).
func TestRoleMissing(t *testing.T) {
	e := Start(t)
	ctx := t.Context()
	e.AddIdentityWithoutRole("ghost@example.com")
	err := login(ctx, e, "ghost@example.com", e.MintToken("ghost@example.com", time.Hour), "verify-full")
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "28000" || !strings.Contains(pgErr.Message, `role "ghost@example.com" does not exist`) {
		t.Fatalf("want 28000 role does not exist, got %v", err)
	}
	t.Logf("valid token, no role: %s %s: %s", pgErr.Severity, pgErr.Code, pgErr.Message)
	err = login(ctx, e, "ghost@example.com", "not-a-token", "verify-full")
	if !errors.As(err, &pgErr) || pgErr.Code != "28000" {
		t.Fatalf("bad token, no role: %v", err)
	}
	t.Logf("bad token, no role: %s %s: %s", pgErr.Severity, pgErr.Code, pgErr.Message)
}

func TestLDAPResponder(t *testing.T) {
	var got []string
	s, err := startLDAP(func(role, pw string) bool { got = append(got, role+"/"+pw); return pw == "ok" })
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	bind := func(id byte, dn, pw string) []byte {
		var op []byte
		op = appendBER(op, tagInteger, []byte{3})
		op = appendBER(op, tagOctetString, []byte(dn))
		op = appendBER(op, tagSimpleAuth, []byte(pw))
		var m []byte
		m = appendBER(m, tagInteger, []byte{id})
		m = appendBER(m, tagBindReq, op)
		return appendBER(nil, tagSequence, m)
	}
	long := strings.Repeat("x", 70000)
	for _, tc := range []struct {
		dn, pw string
		code   byte
	}{
		{"cn=alice,ou=lakebase", "ok", ldapSuccess},
		{"cn=alice,ou=lakebase", "bad", ldapInvalidCredentials},
		{"cn=alice,ou=lakebase", long, ldapInvalidCredentials},
	} {
		resp := ldapRoundTrip(t, s.port, bind(7, tc.dn, tc.pw))
		m, err := readBER(bufio.NewReader(bytes.NewReader(resp)))
		if err != nil {
			t.Fatal(err)
		}
		parts, _ := splitBER(m.value)
		op, _ := splitBER(parts[1].value)
		if parts[0].value[0] != 7 || parts[1].tag != tagBindResp || op[0].value[0] != tc.code {
			t.Errorf("%s: response %x", tc.pw[:min(len(tc.pw), 5)], resp)
		}
	}
	if len(got) != 3 || got[0] != "alice/ok" {
		t.Errorf("checks %q", got[:min(len(got), 2)])
	}
	if roleFromDN("uid=x,dc=y") != "" || roleFromDN("cn=,ou=lakebase") != "" {
		t.Error("roleFromDN accepts a foreign DN")
	}
}

func FuzzParseLDAPMessage(f *testing.F) {
	f.Add([]byte{0x30, 0x0c, 0x02, 0x01, 0x01, 0x60, 0x07, 0x02, 0x01, 0x03, 0x04, 0x00, 0x80, 0x00})
	f.Add([]byte{0x30, 0x84, 0x00, 0x00, 0x00, 0x05, 0x02, 0x01, 0x02, 0x42, 0x00})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := readBER(bufio.NewReader(bytes.NewReader(b)))
		if err != nil {
			return
		}
		_, _, _ = parseLDAPMessage(m)
	})
}
