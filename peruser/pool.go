package peruser

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"github.com/lakebase-go/lakebase/connector"
	"github.com/lakebase-go/lakebase/tokensource"
)

// userPool is one user's pool.
type userPool struct {
	role   string // the canonical identity: the Postgres role
	db     *sql.DB
	src    *userSource
	leases atomic.Int32 // requests holding the pool; raised only under Manager.mu
	used   atomic.Int64 // last use, UnixNano of Manager.clock
}

// idle reports whether p can be closed (Manager.mu held for writing, so no
// lease can be taken meanwhile).
func idle(p *userPool) bool {
	return p.leases.Load() <= 0 && p.db.Stats().InUse == 0
}

// newPool builds a pool for role on src from the user template. It makes
// no network call (the host and user are set) and opens no connection.
// The pool owns src: closing the pool closes it.
func (m *Manager) newPool(role string, src *userSource) (*userPool, error) {
	cfg := m.user
	cfg.User = role
	cfg.TokenSource = src
	conn, err := connector.New(context.Background(), cfg)
	if err != nil {
		_ = src.Close()
		return nil, fmt.Errorf("peruser: pool of %s: %w", role, err)
	}
	db := connector.OpenDB(conn, connector.WithMaxOpenConns(m.cfg.MaxOpenConnsPerUser), connector.WithMaxIdleConns(1), connector.WithConnMaxIdleTime(m.cfg.IdleTTL))
	return &userPool{role: role, db: db, src: src}, nil
}

// close closes p's database (and its connector) and its token source.
func (p *userPool) close() {
	_ = p.db.Close()
	_ = p.src.Close()
}

// open makes p's first connection through the connector — its TLS policy,
// Config.BeforeConnect and AfterConnect hooks, cold-start retries and
// refused-login handling — and leaves it idle in the pool for the first
// query.
func (p *userPool) open(ctx context.Context) error {
	c, err := p.db.Conn(ctx)
	if err != nil {
		return err
	}
	return c.Close()
}

// establish mints src's first credential (bounded by VerifyTimeout) and
// opens a pool for role on it. The pool is not published. On failure src
// is closed.
func (m *Manager) establish(ctx context.Context, role string, src *userSource) (*userPool, error) {
	if err := m.mint(ctx, role, src); err != nil {
		_ = src.Close()
		return nil, err
	}
	p, err := m.newPool(role, src)
	if err != nil {
		return nil, err
	}
	if err := p.open(ctx); err != nil {
		p.close()
		return nil, fmt.Errorf("peruser: first login of %s: %w", role, err)
	}
	return p, nil
}

// mint fetches src's first credential (one mint with the user's token).
// Its error is the token source's *tokensource.Error.
func (m *Manager) mint(ctx context.Context, role string, src *userSource) error {
	ctx, cancel := context.WithTimeout(ctx, m.cfg.VerifyTimeout)
	defer cancel()
	if _, err := src.Token(ctx); err != nil {
		return fmt.Errorf("peruser: minting a credential for %s: %w", role, err)
	}
	return nil
}

// build returns role's pool with one lease: the open one (given the
// verified token), or a new one whose first connection is open.
func (m *Manager) build(ctx context.Context, role, access string, until time.Time) (*userPool, error) {
	if p := m.leaseOpen(role, access, until, nil); p != nil {
		return p, nil
	}
	cand, err := m.establish(ctx, role, newUserSource(m, access, until, nil, false))
	if err != nil {
		return nil, err
	}
	return m.publish(cand)
}

// leaseOpen returns role's open pool with one lease, handing it the
// verified access token (and seed, a credential minted with it), or nil.
func (m *Manager) leaseOpen(role, access string, until time.Time, seed *tokensource.Token) *userPool {
	m.mu.RLock()
	p := m.pools[role]
	if p != nil {
		p.leases.Add(1)
	}
	m.mu.RUnlock()
	if p != nil {
		p.used.Store(m.clock.Now().UnixNano())
		p.src.setAccess(access, until, seed)
	}
	return p
}

// publish makes cand the pool of its role and returns it with one lease.
// If the role got a pool meanwhile, cand is closed and the open pool takes
// its access token and credential.
func (m *Manager) publish(cand *userPool) (*userPool, error) {
	cand.src.proving.Store(false)
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		cand.close()
		return nil, fmt.Errorf("peruser: %w", tokensource.ErrClosed)
	}
	if p := m.pools[cand.role]; p != nil {
		p.leases.Add(1)
		m.mu.Unlock()
		cand.src.mu.Lock()
		access, until := cand.src.access, cand.src.accessUntil
		cand.src.mu.Unlock()
		seed := cand.src.credential()
		p.used.Store(m.clock.Now().UnixNano())
		p.src.setAccess(access, until, seed)
		cand.close()
		return p, nil
	}
	cand.leases.Store(1)
	cand.used.Store(m.clock.Now().UnixNano())
	m.pools[cand.role] = cand
	if f := strings.ToLower(cand.role); m.folded[f] == nil {
		m.folded[f] = cand
	}
	m.created.Add(1)
	evict := m.overCapLocked(cand)
	m.mu.Unlock()
	m.close(evict)
	m.logger.Debug("peruser: pool created", slog.String("role", cand.role), slog.String("lakebase.auth_mode", string(OnBehalfOfUser)))
	return cand, nil
}

// canonical returns the canonical spelling of email if a pool of it is
// open (whatever the case of email), and whether it is known.
func (m *Manager) canonical(email string) (string, bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if p := m.pools[email]; p != nil {
		return p.role, true
	}
	if p := m.folded[strings.ToLower(email)]; p != nil {
		return p.role, true
	}
	return email, false
}

// overCapLocked removes least recently used idle pools beyond MaxUsers,
// never keep (m.mu held). It returns them for closing.
func (m *Manager) overCapLocked(keep *userPool) []*userPool {
	var out []*userPool
	for len(m.pools) > m.cfg.MaxUsers {
		var lru *userPool
		for _, p := range m.pools {
			if p != keep && idle(p) && (lru == nil || p.used.Load() < lru.used.Load()) {
				lru = p
			}
		}
		if lru == nil {
			m.logger.Warn("peruser: more users in flight than MaxUsers; no idle pool to evict", slog.Int("open_pools", len(m.pools)), slog.Int("max_users", m.cfg.MaxUsers))
			break
		}
		m.removeLocked(lru, true)
		out = append(out, lru)
	}
	return out
}

func (m *Manager) removeLocked(p *userPool, evicted bool) {
	if m.pools[p.role] == p {
		delete(m.pools, p.role)
		if f := strings.ToLower(p.role); m.folded[f] == p {
			delete(m.folded, f)
			for _, q := range m.pools { // another role of the same folding, if any
				if strings.ToLower(q.role) == f {
					m.folded[f] = q
					break
				}
			}
		}
	}
	if evicted {
		m.evicted.Add(1)
	}
}

// close closes pools outside the lock.
func (m *Manager) close(ps []*userPool) {
	for _, p := range ps {
		m.logger.Debug("peruser: pool closed", slog.String("role", p.role))
		p.close()
	}
}
