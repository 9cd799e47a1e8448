package peruser

import (
	"container/list"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/databricks/databricks-sdk-go"

	"github.com/lakebase-go/lakebase/connector"
	"github.com/lakebase-go/lakebase/internal/sdkclient"
	"github.com/lakebase-go/lakebase/tokensource"
)

// AuthMode says whose credentials a pool uses; it is logged as
// lakebase.auth_mode.
type AuthMode string

// The auth modes.
const (
	ServicePrincipal AuthMode = "service-principal"
	OnBehalfOfUser   AuthMode = "on-behalf-of-user"
)

// Config configures a Manager. Zero fields have the defaults in comments.
type Config struct {
	// Base is the service principal's configuration (endpoint or instance,
	// host, database, TLS, workspace, Token options). User pools copy it,
	// replacing the user and the token source.
	Base connector.Config
	// MaxUsers caps the open user pools. Zero: 100.
	MaxUsers int
	// IdleTTL closes a user pool unused this long. Zero: 2 minutes.
	IdleTTL time.Duration
	// MaxOpenConnsPerUser caps each user pool. Zero: 3.
	MaxOpenConnsPerUser int
	// DevFallbackToServicePrincipal serves requests without an identity
	// from the service principal's pool. For local development only: it
	// logs a warning once and reports the auth mode as service-principal.
	DevFallbackToServicePrincipal bool
	// NewUserWorkspace builds the workspace client that mints a user's
	// credentials. Nil: a PAT client built only from the user's token and
	// the workspace host, reading nothing from the environment or profiles.
	NewUserWorkspace func(host, accessToken string) (*databricks.WorkspaceClient, error)
	// Clock drives the janitor. Nil: the system clock.
	Clock tokensource.Clock
}

// Stats are counters of a Manager.
type Stats struct {
	OpenPools int   // user pools open now
	Created   int64 // user pools created
	Evicted   int64 // user pools closed for idleness or the MaxUsers cap
}

// userPool is one user's pool.
type userPool struct {
	role   string
	db     *sql.DB
	conn   *connector.Connector
	ws     atomic.Pointer[userClient]
	elem   *list.Element // in Manager.lru
	leases int           // requests holding the pool (Manager.mu)
	used   time.Time     // last use (Manager.mu)
}

// userClient is a user's workspace client and the token it was built from.
type userClient struct {
	token string
	fetch tokensource.FetchFunc
}

// Manager hands out per-user pools. It is safe for concurrent use.
type Manager struct {
	cfg      Config
	logger   *slog.Logger
	clock    tokensource.Clock
	host     string // workspace URL for user clients
	sp       *sql.DB
	spConn   *connector.Connector
	warnOnce sync.Once

	mu      sync.Mutex
	pools   map[string]*userPool
	lru     *list.List // front: most recently used
	janitor tokensource.Timer
	closed  bool
	created atomic.Int64
	evicted atomic.Int64
	wg      sync.WaitGroup // pool closes in flight
}

// New builds the service principal's pool (resolving host and user through
// the workspace once) and starts the janitor.
func New(ctx context.Context, cfg Config) (*Manager, error) {
	if cfg.MaxUsers <= 0 {
		cfg.MaxUsers = 100
	}
	if cfg.IdleTTL <= 0 {
		cfg.IdleTTL = 2 * time.Minute
	}
	if cfg.MaxOpenConnsPerUser <= 0 {
		cfg.MaxOpenConnsPerUser = 3
	}
	if cfg.Clock == nil {
		cfg.Clock = tokensource.SystemClock()
	}
	logger := cfg.Base.Logger
	if logger == nil {
		logger = slog.Default()
	}
	spConn, err := connector.New(ctx, cfg.Base)
	if err != nil {
		return nil, err
	}
	m := &Manager{cfg: cfg, logger: logger, clock: cfg.Clock, spConn: spConn, pools: map[string]*userPool{}, lru: list.New()}
	m.sp = connector.OpenDB(spConn)
	if w := cfg.Base.Workspace; w != nil && w.Config != nil {
		m.host = w.Config.Host
	}
	if m.host == "" {
		m.host = os.Getenv("DATABRICKS_HOST")
	}
	if m.cfg.NewUserWorkspace == nil {
		m.cfg.NewUserWorkspace = patClient
	}
	m.mu.Lock()
	m.scheduleLocked()
	m.mu.Unlock()
	return m, nil
}

// patClient builds a workspace client from nothing but host and token.
func patClient(host, token string) (*databricks.WorkspaceClient, error) {
	return sdkclient.PAT(host, token)
}

// ServicePrincipal returns the service principal's pool (for admin routes).
func (m *Manager) ServicePrincipal() *sql.DB { return m.sp }

// ForRequest returns the pool of the request's user; see ForUser.
func (m *Manager) ForRequest(r *http.Request) (*sql.DB, error) {
	id, err := IdentityFromRequest(r)
	if err != nil {
		return m.fallback(err)
	}
	return m.ForUser(r.Context(), id)
}

func (m *Manager) fallback(err error) (*sql.DB, error) {
	if !m.cfg.DevFallbackToServicePrincipal {
		return nil, err
	}
	m.warnOnce.Do(func() {
		m.logger.Warn("peruser: request without a user identity served as the service principal (DevFallbackToServicePrincipal is on; never enable it in production)",
			slog.String("lakebase.auth_mode", string(ServicePrincipal)))
	})
	return m.sp, nil
}

// ForUser returns the user's pool, creating it on first use. The pool is
// valid until it has been idle for IdleTTL or is evicted by the MaxUsers
// cap; use Acquire or Middleware to pin it for the length of a request.
func (m *Manager) ForUser(ctx context.Context, id Identity) (*sql.DB, error) {
	db, release, err := m.Acquire(ctx, id)
	if err != nil {
		return nil, err
	}
	release()
	return db, nil
}

// Acquire is ForUser with a lease: the pool is not closed before release
// is called.
func (m *Manager) Acquire(_ context.Context, id Identity) (*sql.DB, func(), error) {
	if err := id.Validate(); err != nil {
		return nil, nil, err
	}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil, nil, fmt.Errorf("peruser: %w", tokensource.ErrClosed)
	}
	p := m.pools[id.Email]
	var evict []*userPool
	if p == nil {
		// Build outside the lock (a workspace client, a connector), so
		// first requests of different users do not queue behind each other.
		m.mu.Unlock()
		built, err := m.buildPool(id)
		if err != nil {
			return nil, nil, err
		}
		m.mu.Lock()
		switch existing := m.pools[id.Email]; {
		case m.closed:
			m.mu.Unlock()
			_ = built.db.Close()
			return nil, nil, fmt.Errorf("peruser: %w", tokensource.ErrClosed)
		case existing != nil: // another request of this user won the race
			evict = append(evict, built)
			p = existing
		default:
			p = built
			p.elem = m.lru.PushFront(p)
			m.pools[id.Email] = p
			m.created.Add(1)
			evict = append(evict, m.overCapLocked(p)...)
		}
	}
	p.leases++
	p.used = m.clock.Now()
	m.lru.MoveToFront(p.elem)
	m.mu.Unlock()
	m.close(evict)

	if cur := p.ws.Load(); cur.token != id.AccessToken {
		// The user's token changed: the next mint uses the new one. The
		// pool and its open connections stay.
		uc, err := m.client(id)
		if err != nil {
			m.release(p)
			return nil, nil, err
		}
		p.ws.Store(uc)
	}
	var once sync.Once
	return p.db, func() { once.Do(func() { m.release(p) }) }, nil
}

func (m *Manager) release(p *userPool) {
	m.mu.Lock()
	p.leases--
	p.used = m.clock.Now()
	m.mu.Unlock()
}

// client builds the credential fetcher for a user's current token.
func (m *Manager) client(id Identity) (*userClient, error) {
	w, err := m.cfg.NewUserWorkspace(m.host, id.AccessToken)
	if err != nil {
		return nil, fmt.Errorf("peruser: workspace client for %s: %w", id.Email, errors.New(scrub(err.Error(), id.AccessToken)))
	}
	var fetch tokensource.FetchFunc
	if m.cfg.Base.Instance != "" {
		fetch, err = tokensource.InstanceFetcher(w, m.cfg.Base.Instance)
	} else {
		fetch, err = tokensource.EndpointFetcher(w, m.endpoint(), tokensource.EndpointOptions{TTL: m.cfg.Base.TokenTTL})
	}
	if err != nil {
		return nil, err
	}
	return &userClient{token: id.AccessToken, fetch: fetch}, nil
}

func (m *Manager) endpoint() string {
	if m.cfg.Base.Endpoint != "" {
		return m.cfg.Base.Endpoint
	}
	return os.Getenv(connector.EnvEndpoint)
}

// scrub removes a secret from a message.
func scrub(msg, secret string) string {
	if secret == "" {
		return msg
	}
	return strings.ReplaceAll(msg, secret, "REDACTED")
}

// buildPool creates a user's pool, not yet registered. It makes no network
// call: the host and TLS settings come from the service principal's
// connector.
func (m *Manager) buildPool(id Identity) (*userPool, error) {
	uc, err := m.client(id)
	if err != nil {
		return nil, err
	}
	p := &userPool{role: id.Email}
	p.ws.Store(uc)
	opts := m.cfg.Base.Token
	opts.Mode = tokensource.Lazy
	if opts.Logger == nil {
		opts.Logger = m.logger
	}
	opts.Attributes = append(append(opts.Attributes[:0:0], opts.Attributes...), authModeAttr(OnBehalfOfUser))
	ts := tokensource.New(func(ctx context.Context) (tokensource.Token, error) { return p.ws.Load().fetch(ctx) }, opts)
	cfg := m.cfg.Base
	cfg.Host = m.spConn.Host()
	cfg.User = id.Email
	cfg.TokenSource = ts
	cfg.Password = ""
	cfg.Logger = m.logger.With(slog.String("lakebase.auth_mode", string(OnBehalfOfUser)), slog.String("user_id", id.UserID))
	conn, err := connector.New(context.Background(), cfg)
	if err != nil {
		_ = ts.Close()
		return nil, err
	}
	conn.OnClose(ts.Close)
	p.conn = conn
	p.db = connector.OpenDB(conn, connector.PoolOptions{
		MaxOpenConns: m.cfg.MaxOpenConnsPerUser,
		MaxIdleConns: 1,
		MaxIdleTime:  m.cfg.IdleTTL,
	})
	m.logger.Debug("peruser: pool created", slog.String("role", id.Email), slog.String("user_id", id.UserID),
		slog.String("lakebase.auth_mode", string(OnBehalfOfUser)))
	return p, nil
}

// idle reports whether p can be closed (m.mu held).
func idle(p *userPool) bool { return p.leases == 0 && p.db.Stats().InUse == 0 }

// overCapLocked removes least recently used idle pools beyond MaxUsers,
// never keep (m.mu held). It returns them for closing.
func (m *Manager) overCapLocked(keep *userPool) []*userPool {
	var out []*userPool
	for e := m.lru.Back(); e != nil && len(m.pools) > m.cfg.MaxUsers; {
		p := e.Value.(*userPool)
		prev := e.Prev()
		if p != keep && idle(p) {
			m.removeLocked(p)
			out = append(out, p)
		}
		e = prev
	}
	if len(m.pools) > m.cfg.MaxUsers {
		m.logger.Warn("peruser: more users in flight than MaxUsers; no idle pool to evict", slog.Int("open_pools", len(m.pools)), slog.Int("max_users", m.cfg.MaxUsers))
	}
	return out
}

func (m *Manager) removeLocked(p *userPool) {
	delete(m.pools, p.role)
	m.lru.Remove(p.elem)
	m.evicted.Add(1)
}

// close closes evicted pools outside the lock.
func (m *Manager) close(ps []*userPool) {
	for _, p := range ps {
		m.logger.Debug("peruser: pool closed", slog.String("role", p.role))
		_ = p.db.Close() // also closes the connector and the token source
	}
}

func (m *Manager) scheduleLocked() {
	m.janitor = m.clock.AfterFunc(m.cfg.IdleTTL/2, m.sweep)
}

// sweep closes pools idle for IdleTTL and reschedules itself.
func (m *Manager) sweep() {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return
	}
	now := m.clock.Now()
	var out []*userPool
	for e := m.lru.Back(); e != nil; {
		p := e.Value.(*userPool)
		prev := e.Prev()
		if idle(p) && now.Sub(p.used) >= m.cfg.IdleTTL {
			m.removeLocked(p)
			out = append(out, p)
		}
		e = prev
	}
	m.scheduleLocked()
	m.wg.Add(1)
	m.mu.Unlock()
	defer m.wg.Done()
	m.close(out)
}

// Sweep runs the janitor's pass now (for tests and for callers that want to
// trim immediately).
func (m *Manager) Sweep() {
	m.mu.Lock()
	if m.janitor != nil {
		m.janitor.Stop()
	}
	m.mu.Unlock()
	m.sweep()
}

// Stats returns the counters.
func (m *Manager) Stats() Stats {
	m.mu.Lock()
	defer m.mu.Unlock()
	return Stats{OpenPools: len(m.pools), Created: m.created.Load(), Evicted: m.evicted.Load()}
}

// Close closes every pool and stops the janitor. It is idempotent.
func (m *Manager) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	if m.janitor != nil {
		m.janitor.Stop()
	}
	var all []*userPool
	for _, p := range m.pools {
		all = append(all, p)
	}
	m.pools = map[string]*userPool{}
	m.lru.Init()
	m.mu.Unlock()
	m.wg.Wait()
	m.close(all)
	return m.sp.Close()
}
