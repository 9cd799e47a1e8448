package peruser

import (
	"container/list"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/databricks/databricks-sdk-go/config"
	"go.opentelemetry.io/otel/attribute"

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
	// Base is the service principal's configuration. Its zero fields are
	// resolved once by connector.New (environment, profiles, look-ups);
	// every user pool is derived from that resolved configuration (the
	// endpoint or instance, host, port, database, TLS, token options and
	// workspace host), with the user's email as role and a token source
	// minting with the user's access token. Nothing is read from the
	// environment again.
	Base connector.Config
	// MaxUsers caps the open user pools. Zero: 100. A pool in use is never
	// closed, so the cap can be exceeded while more users are in flight.
	MaxUsers int
	// IdleTTL closes a user pool unused this long. Zero: 2 minutes.
	IdleTTL time.Duration
	// MaxOpenConnsPerUser caps each user pool. Zero: 3.
	MaxOpenConnsPerUser int
	// Verify is how a new access token is proven to belong to the email.
	// Zero: VerifyAuto (Me, or a credential mint and a login where the
	// workspace refuses Me).
	Verify VerifyMethod
	// VerifiedTTL is how long a verified access token is remembered when
	// it is not a JWT with an exp claim. Zero: DefaultVerifiedTTL (5 min).
	// A JWT is remembered until its exp, at most MaxVerifiedAge (1 h).
	VerifiedTTL time.Duration
	// MaxVerifiedTokens caps the remembered tokens (least recently used
	// first out). Zero: DefaultMaxVerifiedTokens.
	MaxVerifiedTokens int
	// VerifyTimeout bounds one verification (it is also bounded by the
	// contexts of the requests waiting for it). Zero: DefaultVerifyTimeout.
	VerifyTimeout time.Duration
	// DevFallbackToServicePrincipal serves requests without an identity
	// from the service principal's pool. For local development only: it
	// logs a warning once and reports the auth mode as service-principal.
	// Requests that do carry identity headers are verified as always.
	DevFallbackToServicePrincipal bool
	// NewUserWorkspace builds the workspace client that verifies a user's
	// token and mints the user's credentials (one per verification or
	// mint; nothing keeps it; its CurrentUser, Postgres and Database
	// services are called). Nil: one light client for all users (only
	// those three services, on the service principal's resolved workspace
	// host, reading nothing from the environment or profiles), each request
	// carrying its user's token, on one HTTP transport (the service
	// principal's workspace transport when its settings set one), with no
	// client-side rate limit.
	// For a full SDK client w, return connector.FromWorkspaceClient(w).
	NewUserWorkspace func(host, accessToken string) (*connector.Workspace, error)
	// Clock drives the janitor, token and verification expiry. Nil: the
	// system clock.
	Clock tokensource.Clock
}

// Stats are counters of a Manager.
type Stats struct {
	OpenPools      int   // user pools open now (including ones being built)
	Created        int64 // user pools created
	Evicted        int64 // user pools closed for idleness or the MaxUsers cap
	Verifications  int64 // access-token proofs made (Me calls or login proofs)
	VerifiedTokens int   // verified tokens remembered now
}

// userPool is one user's pool.
type userPool struct {
	role  string
	ready chan struct{} // closed when the build is done (db or err set)
	err   error
	db    *sql.DB
	src   *userSource
	elem  *list.Element // in Manager.lru
	// Manager.mu:
	leases int       // requests holding the pool (the builder included)
	used   time.Time // last use
}

// Manager hands out per-user pools. It is safe for concurrent use.
type Manager struct {
	cfg       Config
	logger    *slog.Logger
	clock     tokensource.Clock
	sp        *sql.DB
	spConn    *connector.Connector
	user      connector.Config // the template of user configurations
	host      string           // workspace URL for user clients
	transport http.RoundTripper
	ownTrans  *http.Transport  // closed by Close, if the Manager made it
	users     *sdkclient.Users // one workspace client for every user's token
	tokenOpts tokensource.Options
	// seedMargin: a credential is handed out only if it is valid this much
	// longer.
	seedMargin time.Duration
	verifier   *verifier
	warnOnce   sync.Once

	mu      sync.Mutex
	pools   map[string]*userPool
	lru     *list.List // front: most recently used
	janitor tokensource.Timer
	closed  bool
	created atomic.Int64
	evicted atomic.Int64
	wg      sync.WaitGroup // janitor passes in flight
}

// New builds the service principal's pool (connector.New resolves its
// configuration once, looking up what is missing with ctx) and starts the
// janitor. User pools are derived from that resolved configuration.
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
	if cfg.VerifiedTTL <= 0 {
		cfg.VerifiedTTL = DefaultVerifiedTTL
	}
	if cfg.MaxVerifiedTokens <= 0 {
		cfg.MaxVerifiedTokens = DefaultMaxVerifiedTokens
	}
	if cfg.VerifyTimeout <= 0 {
		cfg.VerifyTimeout = DefaultVerifyTimeout
	}
	if cfg.Verify < VerifyAuto || cfg.Verify > VerifyLogin {
		return nil, &connector.ConfigError{Setting: "peruser.Config.Verify", Problem: "unknown verification method " + cfg.Verify.String(), Fix: "use VerifyAuto, VerifyMe or VerifyLogin"}
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
	rc := spConn.Config()
	var spWorkspace *config.Config
	if cfg.NewUserWorkspace == nil {
		// The workspace host of user clients is the service principal's
		// (its client is built now, bounded by ctx, if New did not need
		// it because Host and User were given).
		if spWorkspace, err = spConn.WorkspaceConfig(ctx); err != nil {
			_ = spConn.Close()
			return nil, err
		}
	}
	if err := m.deriveUserConfig(rc, spWorkspace); err != nil {
		_ = spConn.Close()
		return nil, err
	}
	m.sp = connector.OpenDB(spConn)
	m.verifier = newVerifier(m, cfg)
	m.mu.Lock()
	m.scheduleLocked()
	m.mu.Unlock()
	return m, nil
}

// deriveUserConfig builds the template of user configurations from the
// service principal's resolved configuration and workspace settings.
func (m *Manager) deriveUserConfig(r connector.Config, spWorkspace *config.Config) error {
	if r.Endpoint == "" && r.Instance == "" {
		return &connector.ConfigError{Setting: "peruser.Config.Base.Endpoint/Instance (" + connector.EnvEndpoint + "/" + connector.EnvInstance + ")",
			Problem: "user pools need an endpoint or instance to mint users' credentials, and the service principal's configuration has neither",
			Fix:     "set Base.Endpoint or LAKEBASE_ENDPOINT (or Base.Instance / LAKEBASE_INSTANCE)"}
	}
	if spWorkspace != nil {
		m.host = spWorkspace.Host
		m.transport = spWorkspace.HTTPTransport
	}
	if m.host == "" && m.cfg.NewUserWorkspace == nil {
		return &connector.ConfigError{Setting: "peruser.Config.Base.Workspace (DATABRICKS_HOST)",
			Problem: "no workspace host for user clients: the service principal has no workspace client",
			Fix:     "set DATABRICKS_HOST (or a profile), pass Base.Workspace, or set NewUserWorkspace"}
	}
	if m.transport == nil {
		m.ownTrans = sdkclient.NewTransport()
		m.transport = m.ownTrans
	}
	if m.cfg.NewUserWorkspace == nil {
		users, err := sdkclient.NewUsers(m.host, m.transport)
		if err != nil {
			return &connector.ConfigError{Setting: "peruser.Config.Base.Workspace (DATABRICKS_HOST)", Problem: "cannot build the workspace client for user tokens",
				Fix: "check the workspace URL", Err: err}
		}
		m.users = users
	}
	u := r
	u.User, u.Password, u.TokenSource, u.Workspace, u.WorkspaceConfig = "", "", nil, nil, nil
	u.Logger = m.logger.With(slog.String("lakebase.auth_mode", string(OnBehalfOfUser)))
	m.user = u

	opts := r.Token
	opts.Mode = tokensource.Lazy
	opts.Clock = m.clock
	if opts.Logger == nil {
		opts.Logger = u.Logger
	}
	if opts.TracerProvider == nil {
		opts.TracerProvider = r.TracerProvider
	}
	if opts.MeterProvider == nil {
		opts.MeterProvider = r.MeterProvider
	}
	opts.Attributes = append(append(opts.Attributes[:0:0], opts.Attributes...), authModeAttr(OnBehalfOfUser))
	if r.Endpoint != "" {
		opts.Attributes = append(opts.Attributes, attribute.String("lakebase.endpoint", r.Endpoint))
	} else {
		opts.Attributes = append(opts.Attributes, attribute.String("lakebase.instance", r.Instance))
	}
	m.tokenOpts = opts
	m.seedMargin = max(opts.SafetyMargin, opts.EarlyRefresh)
	if m.seedMargin == 0 {
		m.seedMargin = 2 * time.Minute // tokensource's default EarlyRefresh
	}
	return nil
}

// userClient builds a workspace client for a user's access token.
func (m *Manager) userClient(accessToken string) (*sdkclient.Client, error) {
	var (
		w   *sdkclient.Client
		err error
	)
	if m.cfg.NewUserWorkspace != nil {
		var uw *connector.Workspace
		uw, err = m.cfg.NewUserWorkspace(m.host, accessToken)
		if err == nil && uw == nil {
			err = errors.New("NewUserWorkspace returned no client")
		}
		if err == nil {
			w = sdkclient.FromServices(uw.Config, uw.Postgres, uw.Database, uw.CurrentUser)
		}
	} else {
		w = m.users.For(accessToken)
	}
	if err != nil {
		return nil, fmt.Errorf("peruser: user workspace client: %w", scrubbed(err, accessToken))
	}
	return w, nil
}

// fetcher mints a credential of the resolved endpoint or instance with a
// user's access token. The workspace client lives only for the call.
func (m *Manager) fetcher(accessToken string) tokensource.FetchFunc {
	return func(ctx context.Context) (tokensource.Token, error) {
		w, err := m.userClient(accessToken)
		if err != nil {
			return tokensource.Token{}, err
		}
		var fetch tokensource.FetchFunc
		if m.user.Instance != "" {
			fetch, err = tokensource.InstanceFetcher(w.Database, m.user.Instance)
		} else {
			fetch, err = tokensource.EndpointFetcher(w.Postgres, m.user.Endpoint, tokensource.EndpointOptions{TTL: m.user.TokenTTL})
		}
		if err != nil {
			return tokensource.Token{}, err
		}
		return fetch(ctx)
	}
}

// ServicePrincipal returns the service principal's pool (for admin routes).
func (m *Manager) ServicePrincipal() *sql.DB { return m.sp }

// ForRequest returns the pool of the request's user, held until release
// is called (call it when the request is done; it is idempotent). A
// request without a valid identity gets an *AuthError (401), one whose
// token does not prove its email an *AuthError (403). With
// DevFallbackToServicePrincipal a request without identity headers gets
// the service principal's pool.
func (m *Manager) ForRequest(r *http.Request) (*sql.DB, func(), error) {
	db, _, release, err := m.forRequest(r)
	return db, release, err
}

func (m *Manager) forRequest(r *http.Request) (*sql.DB, AuthMode, func(), error) {
	id, err := IdentityFromRequest(r)
	if err != nil {
		if !m.cfg.DevFallbackToServicePrincipal || !noIdentity(r) {
			return nil, "", nil, err
		}
		m.warnOnce.Do(func() {
			m.logger.Warn("peruser: request without a user identity served as the service principal (DevFallbackToServicePrincipal is on; never enable it in production)",
				slog.String("lakebase.auth_mode", string(ServicePrincipal)))
		})
		return m.sp, ServicePrincipal, func() {}, nil
	}
	db, release, err := m.Acquire(r.Context(), id)
	return db, OnBehalfOfUser, release, err
}

// noIdentity reports whether r carries neither identity header (only such
// requests may fall back to the service principal).
func noIdentity(r *http.Request) bool {
	return r.Header.Get(HeaderEmail) == "" && r.Header.Get(HeaderAccessToken) == ""
}

// Acquire verifies that id's access token belongs to id.Email (once per
// token; see Config.Verify) and returns the user's pool, building it on
// first use, held until release is called (release is idempotent). ctx
// bounds the verification and the wait for a build by another request.
// The pool is never closed while held.
func (m *Manager) Acquire(ctx context.Context, id Identity) (*sql.DB, func(), error) {
	if err := id.Validate(); err != nil {
		return nil, nil, err
	}
	pr, err := m.verifier.verify(ctx, id)
	if err != nil {
		return nil, nil, err
	}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil, nil, fmt.Errorf("peruser: %w", tokensource.ErrClosed)
	}
	// The pool is keyed by the proven identity as the workspace spells it
	// (the Postgres role), whatever the case of the header.
	p := m.pools[pr.role]
	if p == nil {
		p = &userPool{role: pr.role, ready: make(chan struct{}), leases: 1, used: m.clock.Now()}
		p.elem = m.lru.PushFront(p)
		m.pools[pr.role] = p
		m.mu.Unlock()
		m.build(p)
	} else {
		p.leases++
		p.used = m.clock.Now()
		m.lru.MoveToFront(p.elem)
		m.mu.Unlock()
		select {
		case <-p.ready:
		default:
			select {
			case <-p.ready:
			case <-ctx.Done():
				m.release(p)
				return nil, nil, fmt.Errorf("peruser: waiting for the pool of %s: %w", id.Email, context.Cause(ctx))
			}
		}
	}
	if p.err != nil {
		m.release(p)
		return nil, nil, p.err
	}
	p.src.setAccess(id.AccessToken, pr.until, pr.seed)
	var once sync.Once
	return p.db, func() { once.Do(func() { m.release(p) }) }, nil
}

// build creates p's pool from the user template (no network call: the
// host and user are set) and publishes it; it evicts idle pools over the
// cap. The builder holds one lease.
func (m *Manager) build(p *userPool) {
	src := &userSource{m: m}
	cfg := m.user
	cfg.User = p.role
	cfg.TokenSource = src
	conn, err := connector.New(context.Background(), cfg)
	if err == nil {
		conn.OnClose(src.Close)
		p.src = src
		p.db = connector.OpenDB(conn, connector.PoolOptions{
			MaxOpenConns: m.cfg.MaxOpenConnsPerUser,
			MaxIdleConns: 1,
			MaxIdleTime:  m.cfg.IdleTTL,
		})
	}
	var evict []*userPool
	m.mu.Lock()
	switch {
	case err != nil:
		p.err = fmt.Errorf("peruser: pool of %s: %w", p.role, err)
		m.removeLocked(p, false)
	case m.closed:
		p.err = fmt.Errorf("peruser: %w", tokensource.ErrClosed)
		evict = append(evict, p) // Close did not see it: it was not ready
	default:
		m.created.Add(1)
		evict = m.overCapLocked(p)
	}
	close(p.ready)
	m.mu.Unlock()
	m.close(evict)
	if err == nil {
		m.logger.Debug("peruser: pool created", slog.String("role", p.role), slog.String("lakebase.auth_mode", string(OnBehalfOfUser)))
	}
}

func (m *Manager) release(p *userPool) {
	m.mu.Lock()
	p.leases--
	p.used = m.clock.Now()
	m.mu.Unlock()
}

// idle reports whether p can be closed (m.mu held).
func idle(p *userPool) bool {
	return p.leases == 0 && p.db != nil && p.db.Stats().InUse == 0
}

// overCapLocked removes least recently used idle pools beyond MaxUsers,
// never keep (m.mu held). It returns them for closing.
func (m *Manager) overCapLocked(keep *userPool) []*userPool {
	var out []*userPool
	for e := m.lru.Back(); e != nil && len(m.pools) > m.cfg.MaxUsers; {
		p := e.Value.(*userPool)
		prev := e.Prev()
		if p != keep && idle(p) {
			m.removeLocked(p, true)
			out = append(out, p)
		}
		e = prev
	}
	if len(m.pools) > m.cfg.MaxUsers {
		m.logger.Warn("peruser: more users in flight than MaxUsers; no idle pool to evict", slog.Int("open_pools", len(m.pools)), slog.Int("max_users", m.cfg.MaxUsers))
	}
	return out
}

func (m *Manager) removeLocked(p *userPool, evicted bool) {
	if m.pools[p.role] == p {
		delete(m.pools, p.role)
		m.lru.Remove(p.elem)
	}
	if evicted {
		m.evicted.Add(1)
	}
}

// close closes pools outside the lock.
func (m *Manager) close(ps []*userPool) {
	for _, p := range ps {
		if p.db == nil {
			continue
		}
		m.logger.Debug("peruser: pool closed", slog.String("role", p.role))
		_ = p.db.Close() // also closes the connector and the token source
	}
}

// scheduleLocked arms the janitor (m.mu held). Only New and the janitor's
// own pass call it, so there is exactly one timer chain.
func (m *Manager) scheduleLocked() {
	m.janitor = m.clock.AfterFunc(m.cfg.IdleTTL/2, m.tick)
}

// tick is the janitor: one pass, then the next timer.
func (m *Manager) tick() {
	m.wg.Add(1)
	defer m.wg.Done()
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return
	}
	out := m.expiredLocked()
	m.scheduleLocked()
	m.mu.Unlock()
	m.close(out)
}

// expiredLocked removes the pools idle for IdleTTL (m.mu held).
func (m *Manager) expiredLocked() []*userPool {
	now := m.clock.Now()
	var out []*userPool
	for e := m.lru.Back(); e != nil; {
		p := e.Value.(*userPool)
		prev := e.Prev()
		if idle(p) && now.Sub(p.used) >= m.cfg.IdleTTL {
			m.removeLocked(p, true)
			out = append(out, p)
		}
		e = prev
	}
	return out
}

// Sweep closes the pools idle for IdleTTL now (for tests and for callers
// that want to trim at once). It does not touch the janitor's timer.
func (m *Manager) Sweep() {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return
	}
	out := m.expiredLocked()
	m.mu.Unlock()
	m.close(out)
}

// Stats returns the counters.
func (m *Manager) Stats() Stats {
	m.mu.Lock()
	open := len(m.pools)
	m.mu.Unlock()
	return Stats{OpenPools: open, Created: m.created.Load(), Evicted: m.evicted.Load(),
		Verifications: m.verifier.proofs.Load(), VerifiedTokens: m.verifier.remembered()}
}

// Close closes every pool (also pools still held: close the HTTP server
// first), stops the janitor and any verification in progress. It is
// idempotent.
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
		select {
		case <-p.ready:
			all = append(all, p)
		default: // its builder closes it
		}
	}
	m.pools = map[string]*userPool{}
	m.lru.Init()
	m.mu.Unlock()
	m.verifier.close()
	m.wg.Wait()
	m.close(all)
	if m.ownTrans != nil {
		m.ownTrans.CloseIdleConnections()
	}
	return m.sp.Close()
}
