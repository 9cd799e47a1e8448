package proxy

import (
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5/pgproto3"
)

const (
	scramMechanism  = "SCRAM-SHA-256"
	scramIterations = 4096 // PostgreSQL's default scram_iterations
	maxAuthMessage  = 4 << 10
)

// scramVerifier is the server side of SCRAM-SHA-256 (RFC 5802/7677) for
// the client password: only the salted keys are kept, never the password.
type scramVerifier struct {
	salt                 []byte
	iterations           int
	storedKey, serverKey []byte
}

func newSCRAMVerifier(password string) (*scramVerifier, error) {
	salt := make([]byte, 16)
	if _, err := rand.Read(salt); err != nil {
		return nil, fmt.Errorf("proxy: client password salt: %w", err)
	}
	salted, err := pbkdf2.Key(sha256.New, password, salt, scramIterations, sha256.Size)
	if err != nil {
		return nil, fmt.Errorf("proxy: client password: %w", err)
	}
	clientKey := hmacSHA256(salted, []byte("Client Key"))
	stored := sha256.Sum256(clientKey)
	return &scramVerifier{salt: salt, iterations: scramIterations, storedKey: stored[:], serverKey: hmacSHA256(salted, []byte("Server Key"))}, nil
}

func hmacSHA256(key, msg []byte) []byte {
	h := hmac.New(sha256.New, key)
	h.Write(msg)
	return h.Sum(nil)
}

// errAuth is a failed client authentication (a wrong password or a
// malformed exchange); the client gets 28P01.
var errAuth = errors.New("proxy: client password authentication failed")

// authenticate runs the SCRAM-SHA-256 exchange with the client. On failure
// the client has been told (FATAL 28P01) and the error is returned.
func (ss *session) authenticate(p *packet) error {
	user, _ := p.get("user")
	if err := ss.s.scram.exchange(ss.cl); err != nil {
		ss.s.refused.Add(1)
		if !isEOF(err) {
			_ = writeMsgs(ss.cl, fatal("28P01", fmt.Sprintf("password authentication failed for user %q", safeName(user)),
				"give the lakebase proxy's client password (the content of its --client-password-file), for example in PGPASSWORD", ""))
		}
		ss.finishEarly(err, false)
		return err
	}
	return nil
}

// exchange runs one SCRAM exchange over rw. It ends with
// AuthenticationSASLFinal; AuthenticationOk follows with the rest of the
// welcome once the backend session is up.
func (v *scramVerifier) exchange(rw io.ReadWriter) error {
	if err := writeMsgs(rw, &pgproto3.AuthenticationSASL{AuthMechanisms: []string{scramMechanism}}); err != nil {
		return err
	}
	body, err := readAuthMessage(rw)
	if err != nil {
		return err
	}
	var first pgproto3.SASLInitialResponse
	if err := first.Decode(body); err != nil || first.AuthMechanism != scramMechanism {
		return fmt.Errorf("%w: expected a %s initial response", errAuth, scramMechanism)
	}
	gs2, bare, clientNonce, err := parseClientFirst(string(first.Data))
	if err != nil {
		return err
	}
	nonceBytes := make([]byte, 18)
	if _, err := rand.Read(nonceBytes); err != nil {
		return err
	}
	nonce := clientNonce + base64.StdEncoding.EncodeToString(nonceBytes)
	serverFirst := "r=" + nonce + ",s=" + base64.StdEncoding.EncodeToString(v.salt) + ",i=" + strconv.Itoa(v.iterations)
	if err := writeMsgs(rw, &pgproto3.AuthenticationSASLContinue{Data: []byte(serverFirst)}); err != nil {
		return err
	}
	body, err = readAuthMessage(rw)
	if err != nil {
		return err
	}
	final := string(body) // SASLResponse: the data is the whole body
	withoutProof, proof, err := parseClientFinal(final, gs2, nonce)
	if err != nil {
		return err
	}
	authMessage := bare + "," + serverFirst + "," + withoutProof
	sig := hmacSHA256(v.storedKey, []byte(authMessage))
	if len(proof) != len(sig) {
		return fmt.Errorf("%w: bad proof length", errAuth)
	}
	clientKey := make([]byte, len(sig))
	for i := range sig {
		clientKey[i] = proof[i] ^ sig[i]
	}
	got := sha256.Sum256(clientKey)
	if subtle.ConstantTimeCompare(got[:], v.storedKey) != 1 {
		return errAuth
	}
	serverSig := hmacSHA256(v.serverKey, []byte(authMessage))
	return writeMsgs(rw, &pgproto3.AuthenticationSASLFinal{Data: []byte("v=" + base64.StdEncoding.EncodeToString(serverSig))})
}

// readAuthMessage reads one password-family message ('p') of at most
// maxAuthMessage bytes and returns its body.
func readAuthMessage(r io.Reader) ([]byte, error) {
	var hdr [5]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	n := int(int32(binary.BigEndian.Uint32(hdr[1:])))
	if hdr[0] != 'p' || n < 4 || n > maxAuthMessage {
		return nil, fmt.Errorf("%w: unexpected message %q of length %d during authentication", errAuth, hdr[0], n)
	}
	body := make([]byte, n-4)
	if _, err := io.ReadFull(r, body); err != nil {
		return nil, err
	}
	return body, nil
}

// parseClientFirst splits "gs2-header client-first-bare". Channel binding
// ("p=") is refused: the proxy offers only SCRAM-SHA-256, not -PLUS.
func parseClientFirst(msg string) (gs2, bare, nonce string, err error) {
	bad := func(why string) (string, string, string, error) {
		return "", "", "", fmt.Errorf("%w: %s", errAuth, why)
	}
	switch {
	case strings.HasPrefix(msg, "n,"), strings.HasPrefix(msg, "y,"):
	case strings.HasPrefix(msg, "p="):
		return bad("channel binding was requested but is not offered")
	default:
		return bad("malformed client-first-message")
	}
	i := strings.Index(msg[2:], ",")
	if i < 0 {
		return bad("malformed client-first-message")
	}
	if i != 0 {
		return bad("an authorization identity is not supported")
	}
	gs2, bare = msg[:3], msg[3:]
	for _, attr := range strings.Split(bare, ",") {
		if strings.HasPrefix(attr, "r=") {
			nonce = attr[2:]
		}
		if strings.HasPrefix(attr, "m=") {
			return bad("mandatory extensions are not supported")
		}
	}
	if nonce == "" || strings.ContainsAny(nonce, ", ") {
		return bad("no client nonce")
	}
	return gs2, bare, nonce, nil
}

// parseClientFinal checks "c=<gs2>,r=<nonce>[,...],p=<proof>" and returns
// the message without the proof and the decoded proof.
func parseClientFinal(msg, gs2, nonce string) (string, []byte, error) {
	i := strings.LastIndex(msg, ",p=")
	if i < 0 {
		return "", nil, fmt.Errorf("%w: no proof", errAuth)
	}
	without := msg[:i]
	proof, err := base64.StdEncoding.DecodeString(msg[i+3:])
	if err != nil {
		return "", nil, fmt.Errorf("%w: undecodable proof", errAuth)
	}
	attrs := strings.Split(without, ",")
	if len(attrs) < 2 || attrs[0] != "c="+base64.StdEncoding.EncodeToString([]byte(gs2)) || attrs[1] != "r="+nonce {
		return "", nil, fmt.Errorf("%w: channel binding or nonce mismatch", errAuth)
	}
	return without, proof, nil
}
