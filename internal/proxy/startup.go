package proxy

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
)

// The request codes a client can send in place of a protocol version in the
// first packet of a connection (PostgreSQL's pqcomm.h).
const (
	codeCancel = 80877102 // 1234.5678
	codeSSL    = 80877103 // 1234.5679
	codeGSSENC = 80877104 // 1234.5680
)

// maxStartupLen is PostgreSQL's MAX_STARTUP_PACKET_LENGTH: a startup packet
// (length word included) longer than this is refused before it is read.
const maxStartupLen = 10000

// packetKind says what a startup-phase packet asks for.
type packetKind int

const (
	kindStartup packetKind = iota + 1 // a StartupMessage
	kindSSL                           // SSLRequest
	kindGSSENC                        // GSSENCRequest
	kindCancel                        // CancelRequest
)

// param is one name/value pair of a StartupMessage, in the client's order.
type param struct{ name, value string }

// packet is one parsed startup-phase packet.
type packet struct {
	kind         packetKind
	major, minor uint16  // protocol version of a StartupMessage
	params       []param // its parameters, in order, names unique
	cancelPID    uint32  // CancelRequest: the process id the client was given
	cancelKey    []byte  // CancelRequest: the secret key (4 bytes in protocol 3.0)
}

// get returns the value of the named parameter.
func (p *packet) get(name string) (string, bool) {
	for _, kv := range p.params {
		if kv.name == name {
			return kv.value, true
		}
	}
	return "", false
}

// errStartup marks a malformed startup packet: the client gets a protocol
// error (08P01) or the connection is closed, and nothing else happens.
var errStartup = errors.New("proxy: malformed startup packet")

// readPacket reads exactly one startup-phase packet from r: a length word
// and that many bytes, never more (bytes a client sends early stay unread,
// so nothing it pipelines before a TLS handshake is ever taken as part of
// it). Lengths outside 8..maxStartupLen are refused before any allocation.
func readPacket(r io.Reader) (packet, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return packet{}, err
	}
	n := int(int32(binary.BigEndian.Uint32(hdr[:])))
	if n < 8 || n > maxStartupLen {
		return packet{}, fmt.Errorf("%w: length %d outside 8..%d", errStartup, n, maxStartupLen)
	}
	body := make([]byte, n-4)
	if _, err := io.ReadFull(r, body); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return packet{}, fmt.Errorf("%w: truncated: %w", errStartup, err)
	}
	return parsePacket(body)
}

// parsePacket parses the body of a startup-phase packet (everything after
// the length word). It never panics, whatever body holds.
func parsePacket(body []byte) (packet, error) {
	if len(body) < 4 {
		return packet{}, fmt.Errorf("%w: %d bytes", errStartup, len(body))
	}
	code := binary.BigEndian.Uint32(body[:4])
	rest := body[4:]
	switch code {
	case codeSSL, codeGSSENC:
		if len(rest) != 0 {
			return packet{}, fmt.Errorf("%w: request with %d trailing bytes", errStartup, len(rest))
		}
		if code == codeSSL {
			return packet{kind: kindSSL}, nil
		}
		return packet{kind: kindGSSENC}, nil
	case codeCancel:
		// Protocol 3.0 keys are 4 bytes; 3.2 allows up to 256.
		if len(rest) < 8 || len(rest) > 4+256 {
			return packet{}, fmt.Errorf("%w: cancel request of %d bytes", errStartup, len(body))
		}
		return packet{kind: kindCancel, cancelPID: binary.BigEndian.Uint32(rest[:4]), cancelKey: bytes.Clone(rest[4:])}, nil
	}
	p := packet{kind: kindStartup, major: uint16(code >> 16), minor: uint16(code)}
	if p.major != 3 {
		// Not a parameter list we know how to read (protocol 2 and
		// unknown request codes); the caller refuses the version.
		return p, nil
	}
	// name\0value\0 ... \0
	if len(rest) == 0 || rest[len(rest)-1] != 0 {
		return packet{}, fmt.Errorf("%w: parameter list not terminated", errStartup)
	}
	rest = rest[:len(rest)-1]
	for len(rest) > 0 {
		name, after, ok := cutNUL(rest)
		if !ok || name == "" {
			return packet{}, fmt.Errorf("%w: bad parameter name", errStartup)
		}
		value, after, ok := cutNUL(after)
		if !ok {
			return packet{}, fmt.Errorf("%w: parameter %q has no value", errStartup, safeName(name))
		}
		if _, dup := p.get(name); dup {
			return packet{}, fmt.Errorf("%w: parameter %q given twice", errStartup, safeName(name))
		}
		p.params = append(p.params, param{name, value})
		rest = after
	}
	return p, nil
}

// cutNUL splits b at its first NUL byte.
func cutNUL(b []byte) (string, []byte, bool) {
	i := bytes.IndexByte(b, 0)
	if i < 0 {
		return "", nil, false
	}
	return string(b[:i]), b[i+1:], true
}

// safeName shortens and cleans a client-supplied name for a message or log.
func safeName(s string) string {
	if len(s) > 64 {
		s = s[:64] + "..."
	}
	return strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return '?'
		}
		return r
	}, s)
}
