package connector

import (
	"context"
	"crypto/sha256"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/lakebase-go/lakebase/tokensource"
)

// DefaultForcedRefreshInterval is the least time between two token
// refreshes forced by refused logins on one connector.
const DefaultForcedRefreshInterval = 30 * time.Second

// A forced refresh that fails is retried by a later connection, the first
// forcedRetryFirst after the failure (or the interval, if shorter), then
// doubling up to the interval.
const forcedRetryFirst = time.Second

// maxRefused bounds the refused tokens remembered per connector.
const maxRefused = 64

// The refused-login policy (the package documentation's "Login policy"):
//
//   - A token the server refused is remembered (by hash) with the server's
//     answer. A connection that would log in with it does not: it replaces
//     the token first, or fails at once with a *LoginError.
//   - Replacing forces one refresh per refused token, shared by concurrent
//     connections, and at most one per ForcedRefreshInterval per connector.
//   - No dead ends: a refusal inside the interval is deferred, not dropped
//     (the first connection after the interval forces the refresh), and a
//     forced refresh that fails is retried by a later connection with
//     bounded backoff (forcedRetryFirst, doubling, capped at the interval).

// loginPolicy bounds the token refreshes that refused logins force.
type loginPolicy struct {
	interval time.Duration // <= 0: no interval limit
	logger   *slog.Logger
	now      func() time.Time

	any atomic.Bool // a token has ever been refused: until then the hot path skips hashing

	mu         sync.Mutex
	refused    map[[32]byte]*refusedToken // bounded by maxRefused
	order      [][32]byte
	lastForced time.Time
}

// refusedToken is one token the server refused and what was done about it.
type refusedToken struct {
	pgErr    *pgconn.PgError   // the server's answer (SQLSTATE and message)
	inflight chan struct{}     // non-nil while a forced refresh for it runs
	fresh    tokensource.Token // its replacement, once a forced refresh produced one
	err      error             // the last forced refresh's failure
	failures int               // consecutive failed forced refreshes
	retryAt  time.Time         // after a failure: the next forced refresh may start here
}

func newLoginPolicy(c *Config) *loginPolicy {
	iv := c.ForcedRefreshInterval
	if iv == 0 {
		iv = DefaultForcedRefreshInterval
	}
	logger := c.Logger
	if logger == nil {
		logger = slog.Default()
	}
	return &loginPolicy{interval: iv, logger: logger, now: time.Now, refused: map[[32]byte]*refusedToken{}}
}

func hashToken(t tokensource.Token) [32]byte { return sha256.Sum256([]byte(t.Value)) }

// isRefused reports whether the server has refused t.
func (p *loginPolicy) isRefused(t tokensource.Token) bool {
	if !p.any.Load() {
		return false // the common case: one atomic load per connect
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	_, ok := p.refused[hashToken(t)]
	return ok
}

// markRefused records that the server refused t with pgErr, without
// forcing anything (the pgxpool path: the next BeforeConnect replaces it).
func (p *loginPolicy) markRefused(t tokensource.Token, pgErr *pgconn.PgError) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.entryLocked(hashToken(t), pgErr)
}

// entryLocked returns the record of the refused token with hash h,
// creating it (p.mu held).
func (p *loginPolicy) entryLocked(h [32]byte, pgErr *pgconn.PgError) *refusedToken {
	r := p.refused[h]
	if r == nil {
		p.any.Store(true)
		if len(p.order) >= maxRefused {
			delete(p.refused, p.order[0])
			p.order = p.order[1:]
		}
		r = &refusedToken{}
		p.refused[h] = r
		p.order = append(p.order, h)
	}
	if r.pgErr == nil && pgErr != nil {
		r.pgErr = &pgconn.PgError{Severity: pgErr.Severity, Code: pgErr.Code, Message: pgErr.Message}
	}
	return r
}

// nextLocked is when a forced refresh for r may start (p.mu held): after
// a failed one, at its retry time; otherwise when the connector's interval
// since the last forced refresh has passed.
func (p *loginPolicy) nextLocked(r *refusedToken) time.Time {
	if r.err != nil {
		return r.retryAt
	}
	if p.interval > 0 && !p.lastForced.IsZero() {
		return p.lastForced.Add(p.interval)
	}
	return time.Time{}
}

// retryDelay is the wait after the n-th consecutive failed forced refresh.
func (p *loginPolicy) retryDelay(n int) time.Duration {
	ceiling := p.interval
	if ceiling <= 0 {
		ceiling = DefaultForcedRefreshInterval
	}
	d := min(forcedRetryFirst, ceiling)
	for i := 1; i < n && d < ceiling; i++ {
		d *= 2
	}
	return min(d, ceiling)
}

// replacement is the outcome of replace.
type replacement struct {
	tok   tokensource.Token // the token to log in with; empty if none
	note  refreshNote       // why there is none
	err   error             // the forced refresh's failure, or the ctx error
	pgErr *pgconn.PgError   // the server's refusal of the old token, if known
}

// replace returns a token to use instead of t, which the server refused
// with pgErr (nil: already recorded). It uses a token that differs from t
// if the source has one (another refresh replaced t meanwhile), waits for
// a forced refresh in flight for t, or forces one when the policy allows.
// Otherwise the result has no token and says why: the refresh is deferred
// (inside the interval), failed (and is retried later), or impossible.
func (p *loginPolicy) replace(ctx context.Context, c *Connector, t tokensource.Token, pgErr *pgconn.PgError) replacement {
	refresher, canRefresh := c.source.(tokensource.Refresher)
	h := hashToken(t)
	for {
		if cur, ok := p.other(ctx, c, t); ok {
			return replacement{tok: cur}
		}
		p.mu.Lock()
		r := p.entryLocked(h, pgErr)
		known := r.pgErr
		if r.fresh.Value != "" {
			fresh := r.fresh
			p.mu.Unlock()
			return replacement{tok: fresh}
		}
		if ch := r.inflight; ch != nil {
			p.mu.Unlock()
			select {
			case <-ch:
				continue // look at its outcome
			case <-ctx.Done():
				return replacement{note: refreshNote{kind: noteWaitEnded}, err: ctx.Err(), pgErr: known}
			}
		}
		if !canRefresh {
			p.mu.Unlock()
			return replacement{note: refreshNote{kind: noteNoRefresher}, pgErr: known}
		}
		now := p.now()
		if next := p.nextLocked(r); now.Before(next) {
			out := replacement{err: r.err, pgErr: known, note: refreshNote{kind: noteDeferred, wait: next.Sub(now), interval: p.interval}}
			if r.err != nil {
				out.note.kind = noteFailed
			}
			p.mu.Unlock()
			return out
		}
		ch := make(chan struct{})
		r.inflight = ch
		p.lastForced = now
		p.mu.Unlock()

		p.logger.Warn("connector: login refused with a cached token; forcing a token refresh", slog.String("role", c.role))
		fresh, err := refresher.Refresh(ctx, t)
		if err == nil && fresh.Value == t.Value {
			err = errors.New("connector: the token source returned the refused token again")
		}
		p.mu.Lock()
		r.inflight = nil
		close(ch)
		if err == nil {
			r.fresh, r.err, r.failures = fresh, nil, 0
			p.mu.Unlock()
			return replacement{tok: fresh}
		}
		if ctxErr := ctx.Err(); ctxErr != nil {
			// This caller gave up; the refresh is not known to have failed
			// (a Cached source carries on with the fetch): the next
			// connection may force it again at once.
			r.err, r.retryAt = err, p.now()
			p.mu.Unlock()
			return replacement{note: refreshNote{kind: noteWaitEnded}, err: err, pgErr: known}
		}
		r.failures++
		r.err = err
		wait := p.retryDelay(r.failures)
		r.retryAt = p.now().Add(wait)
		p.mu.Unlock()
		p.logger.Warn("connector: forced token refresh failed; a later connection retries it", slog.String("role", c.role),
			slog.String("error", err.Error()), slog.Bool("transient", tokensource.IsTransient(err)), slog.Duration("retry_in", wait))
		return replacement{note: refreshNote{kind: noteFailed, wait: wait}, err: err, pgErr: known}
	}
}

// other returns the source's current token if it differs from t (someone
// refreshed meanwhile), without forcing anything.
func (p *loginPolicy) other(ctx context.Context, c *Connector, t tokensource.Token) (tokensource.Token, bool) {
	cur, err := c.source.Token(ctx)
	if err != nil || cur.Value == t.Value {
		return tokensource.Token{}, false
	}
	return cur, true
}

// refusedError is the *LoginError for a refused credential that could not
// be replaced (out has no token). serverErr is the driver error of this
// connection's own refused login, if it made one.
func (c *Connector) refusedError(out replacement, serverErr error) *LoginError {
	le := &LoginError{Role: c.role, Database: c.db, Host: c.host, Code: "28P01", Reason: LoginCredentialRefused, Err: serverErr, Refresh: out.err, note: out.note}
	if out.note.kind == noteDeferred {
		le.Refresh = nil // nothing failed: the refresh is merely not due yet
	}
	var pgErr *pgconn.PgError
	switch {
	case serverErr != nil && errors.As(serverErr, &pgErr):
		le.Code = pgErr.Code
	case out.pgErr != nil:
		le.Code = out.pgErr.Code
		if le.Err == nil {
			le.Err = out.pgErr
		}
	}
	if le.Err == nil {
		le.Err = errors.New("connector: the server refused this token earlier")
	}
	return le
}
