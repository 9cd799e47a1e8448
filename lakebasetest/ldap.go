package lakebasetest

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"time"
)

// The emulator checks token logins with PostgreSQL's "ldap" method in
// simple-bind mode: the server binds as ldapPrefix+role+ldapSuffix with the
// client's password, against the tiny LDAP responder below. LDAP has no
// 128-byte password cap (RADIUS has), so tokens can be JWT-sized.
const (
	ldapPrefix = "cn="
	ldapSuffix = ",ou=lakebase"
)

// LDAP result codes (RFC 4511, 4.1.9).
const (
	ldapSuccess               = 0
	ldapProtocolError         = 2
	ldapAuthMethodUnsupported = 7
	ldapInvalidCredentials    = 49
)

// maxLDAPMessage bounds one incoming message; a bind with a 64 KiB token
// (PostgreSQL's own password limit) fits.
const maxLDAPMessage = 1 << 20

var errBER = errors.New("lakebasetest: malformed BER")

// berElem is one BER tag-length-value.
type berElem struct {
	tag   byte
	value []byte
}

// readBER reads one element with a definite length from r (the only form
// libldap sends). High tag numbers and indefinite lengths are rejected.
func readBER(r *bufio.Reader) (berElem, error) {
	tag, err := r.ReadByte()
	if err != nil {
		return berElem{}, err
	}
	if tag&0x1f == 0x1f {
		return berElem{}, errBER
	}
	n, err := readBERLength(r)
	if err != nil {
		return berElem{}, err
	}
	if n > maxLDAPMessage {
		return berElem{}, errBER
	}
	v := make([]byte, n)
	if _, err := io.ReadFull(r, v); err != nil {
		return berElem{}, err
	}
	return berElem{tag: tag, value: v}, nil
}

func readBERLength(r io.ByteReader) (int, error) {
	b, err := r.ReadByte()
	if err != nil {
		return 0, err
	}
	if b < 0x80 {
		return int(b), nil
	}
	k := int(b & 0x7f)
	if k == 0 || k > 4 { // indefinite, or longer than we accept
		return 0, errBER
	}
	n := 0
	for range k {
		c, err := r.ReadByte()
		if err != nil {
			return 0, err
		}
		n = n<<8 | int(c)
	}
	return n, nil
}

// splitBER splits a constructed value into its elements.
func splitBER(b []byte) ([]berElem, error) {
	var out []berElem
	for len(b) > 0 {
		if len(b) < 2 || b[0]&0x1f == 0x1f {
			return nil, errBER
		}
		tag := b[0]
		n, used := 0, 2
		if l := b[1]; l < 0x80 {
			n = int(l)
		} else {
			k := int(l & 0x7f)
			if k == 0 || k > 4 || len(b) < 2+k {
				return nil, errBER
			}
			for _, c := range b[2 : 2+k] {
				n = n<<8 | int(c)
			}
			used += k
		}
		if n < 0 || n > len(b)-used {
			return nil, errBER
		}
		out = append(out, berElem{tag: tag, value: b[used : used+n]})
		b = b[used+n:]
	}
	return out, nil
}

func appendBER(dst []byte, tag byte, value []byte) []byte {
	dst = append(dst, tag)
	switch n := len(value); {
	case n < 0x80:
		dst = append(dst, byte(n))
	case n < 0x100:
		dst = append(dst, 0x81, byte(n))
	case n < 0x10000:
		dst = append(dst, 0x82, byte(n>>8), byte(n))
	default:
		dst = append(dst, 0x84, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
	return append(dst, value...)
}

// bindRequest is a parsed LDAP BindRequest.
type bindRequest struct {
	msgID    []byte // the raw INTEGER, echoed in the response
	dn       string
	password string
	simple   bool
}

// BER tags used by the responder.
const (
	tagInteger     = 0x02
	tagOctetString = 0x04
	tagEnumerated  = 0x0a
	tagSequence    = 0x30
	tagBindReq     = 0x60 // [APPLICATION 0] constructed
	tagBindResp    = 0x61 // [APPLICATION 1] constructed
	tagUnbindReq   = 0x42 // [APPLICATION 2] primitive
	tagSimpleAuth  = 0x80 // [0] primitive
)

// parseLDAPMessage parses an LDAPMessage. It returns unbind=true for an
// UnbindRequest and an error for anything that is not a bind.
func parseLDAPMessage(m berElem) (req bindRequest, unbind bool, err error) {
	if m.tag != tagSequence {
		return req, false, errBER
	}
	parts, err := splitBER(m.value)
	if err != nil || len(parts) < 2 || parts[0].tag != tagInteger || len(parts[0].value) == 0 {
		return req, false, errBER
	}
	req.msgID = parts[0].value
	switch parts[1].tag {
	case tagUnbindReq:
		return req, true, nil
	case tagBindReq:
	default:
		return req, false, fmt.Errorf("lakebasetest: unsupported LDAP operation 0x%02x", parts[1].tag)
	}
	op, err := splitBER(parts[1].value)
	if err != nil || len(op) < 3 || op[0].tag != tagInteger || op[1].tag != tagOctetString {
		return req, false, errBER
	}
	req.dn = string(op[1].value)
	if op[2].tag == tagSimpleAuth {
		req.simple, req.password = true, string(op[2].value)
	}
	return req, false, nil
}

func bindResponse(msgID []byte, code int, diag string) []byte {
	var body []byte
	body = appendBER(body, tagEnumerated, []byte{byte(code)})
	body = appendBER(body, tagOctetString, nil)
	body = appendBER(body, tagOctetString, []byte(diag))
	var msg []byte
	msg = appendBER(msg, tagInteger, msgID)
	msg = appendBER(msg, tagBindResp, body)
	return appendBER(nil, tagSequence, msg)
}

// ldapServer answers PostgreSQL's LDAP simple binds from the token store.
type ldapServer struct {
	ln    net.Listener
	port  int
	check func(role, password string) bool

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

func startLDAP(check func(role, password string) bool) (*ldapServer, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("lakebasetest: LDAP listener: %w", err)
	}
	s := &ldapServer{ln: ln, port: ln.Addr().(*net.TCPAddr).Port, check: check, conns: map[net.Conn]struct{}{}}
	s.wg.Add(1)
	go s.serve()
	return s, nil
}

func (s *ldapServer) serve() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			_ = c.Close()
			return
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go s.handle(c)
	}
}

func (s *ldapServer) handle(c net.Conn) {
	defer s.wg.Done()
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		_ = c.Close()
	}()
	r := bufio.NewReader(c)
	for {
		_ = c.SetReadDeadline(time.Now().Add(time.Minute))
		m, err := readBER(r)
		if err != nil {
			return
		}
		req, unbind, err := parseLDAPMessage(m)
		if unbind || (err != nil && req.msgID == nil) {
			return
		}
		var resp []byte
		switch {
		case err != nil:
			resp = bindResponse(req.msgID, ldapProtocolError, "only simple binds are supported")
		case !req.simple:
			resp = bindResponse(req.msgID, ldapAuthMethodUnsupported, "only simple binds are supported")
		case s.check(roleFromDN(req.dn), req.password):
			resp = bindResponse(req.msgID, ldapSuccess, "")
		default:
			resp = bindResponse(req.msgID, ldapInvalidCredentials, "invalid credentials")
		}
		if _, err := c.Write(resp); err != nil {
			return
		}
	}
}

// roleFromDN undoes PostgreSQL's ldapprefix + user + ldapsuffix; a DN of
// another shape yields "", which no token is minted for.
func roleFromDN(dn string) string {
	if !strings.HasPrefix(dn, ldapPrefix) || !strings.HasSuffix(dn, ldapSuffix) || len(dn) < len(ldapPrefix)+len(ldapSuffix) {
		return ""
	}
	return dn[len(ldapPrefix) : len(dn)-len(ldapSuffix)]
}

// hbaMethod is the pg_hba.conf method for token logins.
func (s *ldapServer) hbaMethod() string {
	return fmt.Sprintf(`ldap ldapserver=127.0.0.1 ldapport=%d ldapprefix="%s" ldapsuffix="%s"`, s.port, ldapPrefix, ldapSuffix)
}

func (s *ldapServer) close() {
	s.mu.Lock()
	s.closed = true
	for c := range s.conns {
		_ = c.Close()
	}
	s.mu.Unlock()
	_ = s.ln.Close()
	s.wg.Wait()
}
