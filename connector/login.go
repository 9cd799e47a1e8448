package connector

import (
	"context"
	"crypto/sha256"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/lakebase-go/lakebase/tokensource"
)

// DefaultForcedRefreshInterval is the least time between two token
// refreshes forced by refused logins on one connector.
const DefaultForcedRefreshInterval = 30 * time.Second

// DefaultConnectTimeout bounds one new physical connection, cold-start
// retries included, when neither Config.ConnectTimeout nor
// PGCONNECT_TIMEOUT is set. A scaled-to-zero Lakebase endpoint usually
// wakes within a few hundred milliseconds but can take tens of seconds; 60 s
// rides that out while still failing within a minute when the host is
// wrong. (The Databricks CLI allows 120 s.)
const DefaultConnectTimeout = 60 * time.Second

// Cold-start backoff: coldStartFlat retries coldStartFirst apart (most
// computes wake within a few hundred milliseconds), then doubling up to
// coldStartMax; each wait jittered down by up to half.
const (
	coldStartFirst = 50 * time.Millisecond
	coldStartFlat  = 4
	coldStartMax   = time.Second
)

// tokenKey carries the token chosen by Connect into beforeConnect.
type tokenKey struct{}

// beforeConnect sets the password on pgx's per-connection copy of the base
// configuration. It never touches the shared base.
func (c *Connector) beforeConnect(ctx context.Context, cc *pgx.ConnConfig) error {
	if m, ok := ctx.Value(execModeKey{}).(pgx.QueryExecMode); ok {
		cc.DefaultQueryExecMode = m
	}
	if err := c.userBeforeConnect(ctx, cc); err != nil {
		return err
	}
	if c.static != "" {
		cc.Password = c.static
		return nil
	}
	if tok, ok := ctx.Value(tokenKey{}).(tokensource.Token); ok {
		cc.Password = tok.Value
		return nil
	}
	tok, err := c.source.Token(ctx)
	if err != nil {
		return fmt.Errorf("connector: no token for role %q: %w", c.role, err)
	}
	cc.Password = tok.Value
	return nil
}

// BeforeConnect is a pgxpool.Config.BeforeConnect (and
// stdlib.OptionBeforeConnect) hook: it sets the current token as the
// password of the per-connection config copy. PoolConfig installs it with
// the same refused-login recovery as the database/sql path: a login pgx
// sees refused for a token marks that token, and the next BeforeConnect
// forces one refresh (bounded as in Config.ForcedRefreshInterval). After
// Close it fails with an error that errors.Is tokensource.ErrClosed.
func (c *Connector) BeforeConnect(ctx context.Context, cc *pgx.ConnConfig) error {
	if c.isClosed() {
		return fmt.Errorf("connector: %w", tokensource.ErrClosed)
	}
	if err := c.userBeforeConnect(ctx, cc); err != nil {
		return err
	}
	if c.static != "" {
		cc.Password = c.static
		return nil
	}
	tok, err := c.source.Token(ctx)
	if err != nil {
		return fmt.Errorf("connector: no token for role %q: %w", c.role, err)
	}
	if c.login.isRefused(tok) {
		// pgx saw this token refused on an earlier login: replace it
		// (at most once per token and once per interval).
		if fresh, ok := c.login.refresh(ctx, c, tok); ok {
			tok = fresh
		}
	}
	cc.Password = tok.Value
	watch := c.login.watch(tok)
	prev := cc.AfterNetConnect
	cc.AfterNetConnect = func(ctx context.Context, pc *pgconn.Config, conn net.Conn) (net.Conn, error) {
		if prev != nil {
			var err error
			if conn, err = prev(ctx, pc, conn); err != nil {
				return nil, err
			}
		}
		return watch(conn), nil
	}
	return nil
}

// userBeforeConnect runs Config.BeforeConnect on cc before any password is
// set.
func (c *Connector) userBeforeConnect(ctx context.Context, cc *pgx.ConnConfig) error {
	if c.cfg.BeforeConnect == nil {
		return nil
	}
	cc.Password = ""
	if err := c.cfg.BeforeConnect(ctx, cc); err != nil {
		return fmt.Errorf("connector: Config.BeforeConnect: %w", err)
	}
	return nil
}

// loginPolicy bounds the token refreshes that refused logins force.
type loginPolicy struct {
	interval time.Duration
	logger   *slog.Logger

	any atomic.Bool // a token has ever been refused: until then the hot path skips hashing

	mu         sync.Mutex
	refused    map[[32]byte]*forced // refused tokens by hash, bounded
	order      [][32]byte
	lastForced time.Time
}

// forced is one forced refresh, shared by every login refused with the
// same token.
type forced struct {
	done chan struct{}
	tok  tokensource.Token
	ok   bool
}

const maxRefused = 64

func newLoginPolicy(c *Config) *loginPolicy {
	iv := c.ForcedRefreshInterval
	if iv == 0 {
		iv = DefaultForcedRefreshInterval
	}
	return &loginPolicy{interval: iv, logger: c.Logger, refused: map[[32]byte]*forced{}}
}

func hashToken(t tokensource.Token) [32]byte { return sha256.Sum256([]byte(t.Value)) }

func (p *loginPolicy) isRefused(t tokensource.Token) bool {
	if !p.any.Load() {
		return false // the common case: one atomic load per connect
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	_, ok := p.refused[hashToken(t)]
	return ok
}

// markRefused records t as refused without forcing anything (the pgxpool
// path: the next BeforeConnect does the refresh).
func (p *loginPolicy) markRefused(t tokensource.Token) {
	p.mu.Lock()
	defer p.mu.Unlock()
	h := hashToken(t)
	if _, ok := p.refused[h]; !ok {
		p.addLocked(h, nil)
	}
}

func (p *loginPolicy) addLocked(h [32]byte, f *forced) {
	p.any.Store(true)
	if len(p.order) >= maxRefused {
		delete(p.refused, p.order[0])
		p.order = p.order[1:]
	}
	p.refused[h] = f
	p.order = append(p.order, h)
}

// refresh returns a token to use instead of the refused token t, forcing a
// refresh when policy allows: at most one per refused token (concurrent
// logins refused with t share it) and one per interval per connector.
// ok is false when no other token is available.
func (p *loginPolicy) refresh(ctx context.Context, c *Connector, t tokensource.Token) (tokensource.Token, bool) {
	refresher, canRefresh := c.source.(tokensource.Refresher)
	h := hashToken(t)
	p.mu.Lock()
	f := p.refused[h]
	if f == nil {
		now := time.Now()
		if !canRefresh || (p.interval > 0 && !p.lastForced.IsZero() && now.Sub(p.lastForced) < p.interval) {
			p.addLocked(h, &forced{done: closedChan})
			p.mu.Unlock()
			return p.other(ctx, c, t)
		}
		p.lastForced = now
		f = &forced{done: make(chan struct{})}
		p.addLocked(h, f)
		p.mu.Unlock()
		p.logger.Warn("connector: login refused with a cached token; refreshing the token once",
			slog.String("role", c.role))
		fresh, err := refresher.Refresh(ctx, t)
		if err == nil && fresh.Value != t.Value {
			f.tok, f.ok = fresh, true
		} else if err != nil {
			p.logger.Warn("connector: forced token refresh failed", slog.String("role", c.role), slog.String("error", err.Error()))
		}
		close(f.done)
		return f.tok, f.ok
	}
	p.mu.Unlock()
	select {
	case <-f.done:
	case <-ctx.Done():
		return tokensource.Token{}, false
	}
	if f.ok {
		return f.tok, true
	}
	return p.other(ctx, c, t)
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

var closedChan = func() chan struct{} { ch := make(chan struct{}); close(ch); return ch }()

// retryConnector does the token bookkeeping around pgx's stdlib connector:
// it picks the token, rides out a cold start (an endpoint waking from
// scale to zero) and, when the credential itself is refused, forces one
// bounded refresh and retries once.
type retryConnector struct {
	raw driver.Connector
	c   *Connector
}

func (rc *retryConnector) Driver() driver.Driver { return rc.raw.Driver() }

func (rc *retryConnector) Connect(ctx context.Context) (driver.Conn, error) {
	c := rc.c
	if c.isClosed() {
		return nil, fmt.Errorf("connector: %w", tokensource.ErrClosed)
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.ConnectTimeout)
	defer cancel()
	if c.source == nil {
		conn, err := rc.dial(ctx, tokensource.Token{})
		return conn, rc.wrapErr(err, false)
	}
	tok, err := c.source.Token(ctx)
	if err != nil {
		return nil, fmt.Errorf("connector: no token for role %q: %w", c.role, err)
	}
	if c.login.isRefused(tok) {
		if fresh, ok := c.login.refresh(ctx, c, tok); ok {
			tok = fresh
		}
	}
	conn, err := rc.dial(ctx, tok)
	if err == nil || !credentialRefused(err) {
		return conn, rc.wrapErr(err, true)
	}
	fresh, ok := c.login.refresh(ctx, c, tok)
	if !ok {
		return nil, rc.wrapErr(err, true)
	}
	conn, err = rc.dial(ctx, fresh)
	return conn, rc.wrapErr(err, true)
}

// dial makes one physical connection with tok, retrying the failures of a
// compute that is waking up (dial errors, SQLSTATE class 08 and 57P03)
// with jittered backoff until ctx ends. The token is not re-fetched.
func (rc *retryConnector) dial(ctx context.Context, tok tokensource.Token) (driver.Conn, error) {
	if tok.Value != "" {
		ctx = context.WithValue(ctx, tokenKey{}, tok)
	}
	wait := coldStartFirst
	logged := false
	for attempt := 1; ; attempt++ {
		conn, err := rc.raw.Connect(ctx)
		if err == nil || !coldStart(err) || ctx.Err() != nil {
			if err != nil && ctx.Err() != nil && coldStart(err) {
				err = &WakeError{Host: rc.c.host, Attempts: attempt, Err: err}
			}
			return conn, err
		}
		if !logged {
			rc.c.logger.Info("connector: endpoint waking up, retrying", slog.String("host", rc.c.host), slog.String("error", err.Error()))
			logged = true
		}
		d := wait/2 + time.Duration(rand.Int64N(int64(wait/2)+1))
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, &WakeError{Host: rc.c.host, Attempts: attempt, Err: err}
		}
		if attempt >= coldStartFlat {
			wait = min(wait*2, coldStartMax)
		}
	}
}

// WakeError reports that a new connection kept failing the way a waking
// (scaled-to-zero) or restarting endpoint fails until ConnectTimeout or the
// caller's deadline ran out. It is transient: a later attempt may succeed.
type WakeError struct {
	Host     string // the host that did not accept the connection
	Attempts int    // connection attempts made
	Err      error  // the last attempt's error
}

// Error implements error.
func (e *WakeError) Error() string {
	return fmt.Sprintf("connector: %s did not accept a connection after %d attempts (the endpoint may be waking up from scale to zero, restarting or unreachable): %v (fix: retry later, or raise ConnectTimeout/PGCONNECT_TIMEOUT)", e.Host, e.Attempts, e.Err)
}

// Unwrap returns the last attempt's error.
func (e *WakeError) Unwrap() error { return e.Err }

// Temporary reports true: the condition is expected to pass.
func (e *WakeError) Temporary() bool { return true }

// coldStart reports whether err is how a compute that is waking up or
// restarting refuses a connection: a dial error (refused, reset, timeout,
// closed before the startup finished), SQLSTATE class 08 or 57P03. Refusals
// of the login (28xxx, 42501, 3D000) and TLS certificate failures are not.
func coldStart(err error) bool {
	if _, _, refused := refusal(err); refused {
		return false
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code == "57P03" || len(pgErr.Code) == 5 && pgErr.Code[:2] == "08"
	}
	if tokensource.IsTransient(err) {
		return true
	}
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// wrapErr turns a refused login into a *LoginError and wraps everything
// else with the package prefix.
func (rc *retryConnector) wrapErr(err error, token bool) error {
	if err == nil {
		return nil
	}
	if code, reason, ok := refusal(err); ok {
		if !token && (reason == LoginCredentialRefused || reason == LoginPoolerRefused) {
			reason = LoginPasswordRefused
		}
		return &LoginError{Role: rc.c.role, Database: rc.c.db, Host: rc.c.host, Code: code, Reason: reason, Err: err}
	}
	var we *WakeError
	if errors.As(err, &we) {
		return err
	}
	return fmt.Errorf("connector: connect to %s as %q: %w", rc.c.host, rc.c.role, err)
}
