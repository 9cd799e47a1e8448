package peruser

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lakebase-go/lakebase/tokensource"
)

// userSource is the password source of one user's pool. It mints with the
// user's latest verified access token through a lazy tokensource.Cached
// (nothing runs while the pool is idle). A new access token replaces the
// Cached, so a failure remembered for the old token does not outlive it;
// a still-valid credential of the same user is carried over as the seed,
// so a token change costs no mint by itself.
//
// While proving is set the source belongs to a login proof that has not
// succeeded yet: its credential was minted a moment ago with a token not
// yet trusted, so a refused login is the answer of the proof, and Refresh
// mints nothing (a newer credential of the same token cannot prove more).
type userSource struct {
	m       *Manager
	proving atomic.Bool
	// current is the latest access token, for the lock-free check of
	// setAccess (the hot path of a returning user).
	current atomic.Pointer[string]

	mu          sync.Mutex
	access      string    // the latest verified access token
	accessUntil time.Time // it is trusted until then
	cached      *tokensource.Cached
	seed        tokensource.Token // a credential to use before cached (minted by a login proof or for the previous token)
	last        tokensource.Token // the last credential handed out
	closed      bool
}

var (
	_ tokensource.Source    = (*userSource)(nil)
	_ tokensource.Refresher = (*userSource)(nil)
	_ io.Closer             = (*userSource)(nil)
)

// newUserSource returns a source minting with access (trusted until
// until), starting with seed when it is set.
func newUserSource(m *Manager, access string, until time.Time, seed *tokensource.Token, proving bool) *userSource {
	s := &userSource{m: m, access: access, accessUntil: until}
	s.current.Store(&access)
	if seed != nil {
		s.seed = *seed
	}
	s.proving.Store(proving)
	return s
}

// usable reports whether t can still be handed out for a login.
func (s *userSource) usable(t tokensource.Token) bool {
	return t.Value != "" && s.m.clock.Now().Add(s.m.seedMargin).Before(t.Expiry)
}

// currentLocked returns the seed or the Cached to ask (s.mu held).
func (s *userSource) currentLocked() (tokensource.Token, *tokensource.Cached, error) {
	if s.closed {
		return tokensource.Token{}, nil, fmt.Errorf("peruser: %w", tokensource.ErrClosed)
	}
	if s.seed.Value != "" {
		if s.usable(s.seed) {
			s.last = s.seed
			return s.seed, nil, nil
		}
		s.seed = tokensource.Token{}
	}
	if s.cached == nil {
		s.cached = tokensource.New(s.m.fetcher(s.access), s.m.tokenOpts)
	}
	return tokensource.Token{}, s.cached, nil
}

// Token implements tokensource.Source.
func (s *userSource) Token(ctx context.Context) (tokensource.Token, error) {
	return s.get(ctx, nil)
}

// Refresh implements tokensource.Refresher: the connector calls it when a
// login with stale was refused. During a login proof it returns stale:
// the refusal stands.
func (s *userSource) Refresh(ctx context.Context, stale tokensource.Token) (tokensource.Token, error) {
	if s.proving.Load() {
		return stale, nil
	}
	return s.get(ctx, &stale)
}

func (s *userSource) get(ctx context.Context, stale *tokensource.Token) (tokensource.Token, error) {
	for attempt := 0; ; attempt++ {
		s.mu.Lock()
		if stale != nil && s.seed.Value == stale.Value {
			s.seed = tokensource.Token{}
		}
		seed, c, err := s.currentLocked()
		s.mu.Unlock()
		if err != nil || c == nil {
			return seed, err
		}
		var t tokensource.Token
		if stale != nil {
			t, err = c.Refresh(ctx, *stale)
		} else {
			t, err = c.Token(ctx)
		}
		s.mu.Lock()
		swapped := s.cached != c && !s.closed
		if err == nil && !swapped {
			s.last = t
		}
		s.mu.Unlock()
		if err != nil && swapped && attempt == 0 && errors.Is(err, tokensource.ErrClosed) {
			continue // the access token changed during the fetch: ask the new source
		}
		return t, err
	}
}

// credential returns the last credential handed out, if it is still
// usable (to seed another source of the same user).
func (s *userSource) credential() *tokensource.Token {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.usable(s.last) {
		return nil
	}
	t := s.last
	return &t
}

// setAccess makes token (verified until until) the one the next mint uses.
// An older token of the same user (one that is trusted for less long than
// the current one) does not replace a newer one. The common case — the
// token the source already has, no seed — is one atomic load and a
// comparison.
func (s *userSource) setAccess(token string, until time.Time, seed *tokensource.Token) {
	if seed == nil {
		if cur := s.current.Load(); cur != nil && *cur == token {
			return
		}
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	if token == s.access {
		if seed != nil && s.cached == nil && !s.usable(s.seed) {
			s.seed = *seed
		}
		s.mu.Unlock()
		return
	}
	if s.access != "" && until.Before(s.accessUntil) && s.m.clock.Now().Before(s.accessUntil) {
		s.mu.Unlock()
		return
	}
	old := s.cached
	s.access, s.accessUntil, s.cached = token, until, nil
	cur := token // a copy: taking token's address would move every call's argument to the heap
	s.current.Store(&cur)
	switch {
	case seed != nil:
		s.seed = *seed
	case s.usable(s.last):
		s.seed = s.last
	}
	s.mu.Unlock()
	if old != nil {
		_ = old.Close()
	}
}

// Close stops the Cached (the connector calls it when the pool closes).
func (s *userSource) Close() error {
	s.mu.Lock()
	c := s.cached
	s.closed, s.cached, s.access, s.seed, s.last = true, nil, "", tokensource.Token{}, tokensource.Token{}
	s.current.Store(nil)
	s.mu.Unlock()
	if c != nil {
		return c.Close()
	}
	return nil
}
