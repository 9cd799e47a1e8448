package lakebasetest

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"layeh.com/radius"
	"layeh.com/radius/rfc2865"
)

// tokenPrefix starts every emulator token, so tests can search output for
// leaks.
const tokenPrefix = "lbt_"

type minted struct {
	role    string
	expiry  time.Time
	revoked bool
}

// tokenStore holds every token this emulator minted. Tokens are 47 bytes,
// under PostgreSQL's 128-byte RADIUS password limit.
type tokenStore struct {
	mu      sync.Mutex
	tokens  map[string]*minted
	logins  map[string]*atomic.Int64
	rejects map[string]*atomic.Int64
}

func newTokenStore() *tokenStore {
	return &tokenStore{tokens: map[string]*minted{}, logins: map[string]*atomic.Int64{}, rejects: map[string]*atomic.Int64{}}
}

func (s *tokenStore) mint(role string, ttl time.Duration) (string, time.Time) {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	tok := tokenPrefix + base64.RawURLEncoding.EncodeToString(b)
	exp := time.Now().Add(ttl).Truncate(time.Millisecond)
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

// radiusServer answers PostgreSQL's RADIUS Access-Requests from the store.
type radiusServer struct {
	conn   net.PacketConn
	srv    *radius.PacketServer
	secret string
	port   int
	done   chan struct{}
}

func startRADIUS(store *tokenStore) (*radiusServer, error) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("lakebasetest: RADIUS listener: %w", err)
	}
	b := make([]byte, 18)
	_, _ = rand.Read(b)
	secret := base64.RawURLEncoding.EncodeToString(b)
	r := &radiusServer{conn: pc, secret: secret, port: pc.LocalAddr().(*net.UDPAddr).Port, done: make(chan struct{})}
	r.srv = &radius.PacketServer{
		SecretSource: radius.StaticSecretSource([]byte(secret)),
		Handler: radius.HandlerFunc(func(w radius.ResponseWriter, req *radius.Request) {
			code := radius.CodeAccessReject
			if store.check(rfc2865.UserName_GetString(req.Packet), rfc2865.UserPassword_GetString(req.Packet)) {
				code = radius.CodeAccessAccept
			}
			_ = w.Write(req.Response(code))
		}),
	}
	go func() {
		defer close(r.done)
		_ = r.srv.Serve(pc)
	}()
	return r, nil
}

func (r *radiusServer) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = r.srv.Shutdown(ctx)
	_ = r.conn.Close()
	<-r.done
}
