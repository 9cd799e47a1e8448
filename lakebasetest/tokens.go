package lakebasetest

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// tokenPrefix starts the signature part of every emulator token, so tests
// can search output for leaks ("lbt_" is valid base64url, so the token is
// still a well-formed JWT).
const tokenPrefix = "lbt_"

// DefaultTokenSize is the length in bytes of the credentials the emulator
// mints unless WithTokenSize says otherwise: real Lakebase credentials are
// JWTs of roughly 1–2 KB.
const DefaultTokenSize = 1024

// jwtHeader is the first part of every token.
var jwtHeader = base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"RS256","kid":"lakebasetest","typ":"JWT"}`))

// minSignature is the length of an RS256 signature (256 bytes) in base64url.
const minSignature = 342

type minted struct {
	role    string
	expiry  time.Time
	revoked bool
}

// tokenStore holds every token this emulator minted.
type tokenStore struct {
	size    int
	mu      sync.Mutex
	tokens  map[string]*minted
	logins  map[string]*atomic.Int64
	rejects map[string]*atomic.Int64
}

func newTokenStore(size int) *tokenStore {
	return &tokenStore{size: size, tokens: map[string]*minted{}, logins: map[string]*atomic.Int64{}, rejects: map[string]*atomic.Int64{}}
}

// claims is the payload of an emulator token. Pad fills the token to the
// configured size.
type claims struct {
	Iss   string `json:"iss"`
	Sub   string `json:"sub"`
	Aud   string `json:"aud"`
	Scope string `json:"scope"`
	Iat   int64  `json:"iat"`
	Exp   int64  `json:"exp"`
	Jti   string `json:"jti"`
	Pad   string `json:"pad"`
}

func payloadJSON(c claims) []byte {
	b, _ := json.Marshal(c)
	return b
}

// minTokenSize is the smallest size makeJWT can honour (a long role name
// needs more).
func minTokenSize(role string) int {
	c := claims{Iss: "lakebasetest", Sub: role, Aud: "lakebase", Scope: "postgres", Iat: 1 << 40, Exp: 1 << 40, Jti: randomString(16)}
	return len(jwtHeader) + 1 + base64.RawURLEncoding.EncodedLen(len(payloadJSON(c))) + 1 + len(tokenPrefix) + minSignature + 2
}

// makeJWT builds a JWT-shaped token of exactly size bytes (header.payload.
// signature, base64url, with sub, exp and iat claims) when size is at
// least minTokenSize(role), else the smallest token it can.
func makeJWT(role string, iat, exp time.Time, size int) string {
	c := claims{Iss: "lakebasetest", Sub: role, Aud: "lakebase", Scope: "postgres", Iat: iat.Unix(), Exp: exp.Unix(), Jti: randomString(16)}
	base := len(payloadJSON(c))
	// budget for payload+signature in base64url characters
	budget := size - len(jwtHeader) - 2 - len(tokenPrefix)
	// Pick the signature length (≥ minSignature) so that the payload's
	// base64url length is reachable (a base64url length is never 1 mod 4)
	// and the payload fits.
	var sig, plen int
	for s := minSignature; s < minSignature+4; s++ {
		t := budget - s
		if t%4 != 1 && (s+len(tokenPrefix))%4 != 1 && t >= base64.RawURLEncoding.EncodedLen(base) {
			sig, plen = s, t
			break
		}
	}
	if sig == 0 { // size too small: no padding
		sig, plen = minSignature, base64.RawURLEncoding.EncodedLen(base)
	}
	raw := plen * 3 / 4 // bytes whose base64url length is plen
	c.Pad = randomChars(raw - base)
	payload := base64.RawURLEncoding.EncodeToString(payloadJSON(c))
	return jwtHeader + "." + payload + "." + tokenPrefix + randomChars(sig)
}

// randomChars returns n random base64url characters.
func randomChars(n int) string {
	if n <= 0 {
		return ""
	}
	b := make([]byte, n*3/4+3)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)[:n]
}

func (s *tokenStore) mint(role string, ttl time.Duration) (string, time.Time) {
	now := time.Now()
	exp := now.Add(ttl).Truncate(time.Millisecond)
	tok := makeJWT(role, now, exp, s.size)
	s.mu.Lock()
	s.tokens[tok] = &minted{role: role, expiry: exp}
	s.mu.Unlock()
	return tok, exp
}

func (s *tokenStore) revoke(role string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, m := range s.tokens {
		if m.role == role {
			m.revoked = true
		}
	}
}

func counter(m map[string]*atomic.Int64, role string) *atomic.Int64 {
	c, ok := m[role]
	if !ok {
		c = new(atomic.Int64)
		m[role] = c
	}
	return c
}

// check reports whether password is a live token minted for role, and
// counts the outcome.
func (s *tokenStore) check(role, password string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	m, ok := s.tokens[password]
	good := ok && m.role == role && !m.revoked && time.Now().Before(m.expiry)
	if good {
		counter(s.logins, role).Add(1)
	} else {
		counter(s.rejects, role).Add(1)
	}
	return good
}

func (s *tokenStore) count(m map[string]*atomic.Int64, role string) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return counter(m, role).Load()
}

// validTokenSize reports whether n is a usable WithTokenSize value.
func validTokenSize(n int) error {
	if min := minTokenSize("6f1c2d3e-4a5b-4c6d-8e7f-0123456789ab"); n < min {
		return fmt.Errorf("lakebasetest: WithTokenSize(%d): a JWT-shaped token needs at least %d bytes; use 0 for the default (%d)", n, min, DefaultTokenSize)
	}
	return nil
}
