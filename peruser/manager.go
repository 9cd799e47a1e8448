package peruser

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/databricks/databricks-sdk-go/config"
	"go.opentelemetry.io/otel/attribute"

	"github.com/lakebase-go/lakebase/connector"
	"github.com/lakebase-go/lakebase/internal/clock"
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
	// endpoint or instance, host, port, database, TLS, token options,
	// hooks and workspace host), with the user's canonical identity as
	// role and a token source minting with the user's access token.
	// Nothing is read from the environment again.
	Base connector.Config
	// MaxUsers caps the open user pools. Zero: DefaultMaxUsers (100). A pool in use is never
	// closed, so the cap can be exceeded while more users are in flight.
	MaxUsers int
	// IdleTTL closes a user pool unused this long. Zero: DefaultIdleTTL
	// (2 min).
	IdleTTL time.Duration
	// MaxOpenConnsPerUser caps each user pool. Zero:
	// DefaultMaxOpenConnsPerUser (3).
	MaxOpenConnsPerUser int
	// Verify is how a new access token is proven to belong to the email.
	// Zero: VerifyAuto (Me, or a credential mint and a login once a token
	// whose Me was refused has proved its email by login).
	Verify VerifyMethod
	// VerifiedTTL is how long a verified access token is remembered when
	// it is not a JWT with an exp claim. Zero: DefaultVerifiedTTL (5 min).
	// A JWT is remembered until its exp, at most MaxVerifiedAge (1 h).
	VerifiedTTL time.Duration
	// MaxVerifiedTokens caps the remembered tokens (about the least
	// recently used go first). Zero: DefaultMaxVerifiedTokens.
	MaxVerifiedTokens int
	// VerifyTimeout bounds the workspace call of one verification (the Me
	// call, or the credential mint of a login proof); the login itself is
	// bounded by the connector's ConnectTimeout, and both by the contexts
	// of the requests waiting. Zero: DefaultVerifyTimeout.
	VerifyTimeout time.Duration
	// MaxVerifications caps the verifications in flight (each is a
	// workspace call, and with the login proof a Postgres login). A new
	// token beyond it is refused at once, without a workspace call, with a
	// transient error wrapping ErrBusy (503). Requests that share a
	// verification in flight, and tokens already verified, do not count.
	// Zero: DefaultMaxVerifications; negative: no cap.
	MaxVerifications int
	// FailedTTL is how long a failed verification is remembered by the
	// token's SHA-256: a token the workspace refused, one that does not
	// prove its email, or a real user whose login cannot succeed (a
	// *connector.LoginError: role missing, no CONNECT, database missing).
	// Transient failures are never remembered. Zero: DefaultFailedTTL
	// (30 s); negative: nothing is remembered.
	FailedTTL time.Duration
	// MaxFailedTokens caps the remembered failures. Zero:
	// DefaultMaxFailedTokens.
	MaxFailedTokens int
	// ErrorHandler writes Middleware's response when a request gets no
	// pool (as httputil.ReverseProxy.ErrorHandler): err is the error of
	// ForRequest, StatusCode(err) the status the default handler answers
	// with. Nil: the status text of StatusCode(err). Middleware logs the
	// cause of every 5xx before calling it.
	ErrorHandler func(http.ResponseWriter, *http.Request, error)
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
	// For a full SDK client w, return &connector.Workspace{Config: w.Config,
	// Postgres: w.Postgres, Database: w.Database, CurrentUser: w.CurrentUser}.
	NewUserWorkspace func(host, accessToken string) (*connector.Workspace, error)

	clock clock.Clock // the janitor's, tokens' and verifications' (nil: the system clock; tests set it)
}

// Stats are counters of a Manager.
type Stats struct {
	OpenPools      int   // user pools open now
	Created        int64 // user pools created
	Evicted        int64 // user pools closed for idleness or the MaxUsers cap
	Verifications  int64 // access-token proofs made (Me calls or login proofs)
	VerifiedTokens int   // verified tokens remembered now
	Verifying      int   // verifications in flight now (the ones MaxVerifications counts)
	Busy           int64 // requests refused because MaxVerifications were in flight
	FailedTokens   int   // failed verifications remembered now
}

// Manager hands out per-user pools. It is safe for concurrent use.
type Manager struct {
	cfg       Config
	logger    *slog.Logger
	clock     clock.Clock
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
	warnOnce   sync.Once

	busyErr     error        // the one error of every request refused by MaxVerifications
	busyLogged  atomic.Int64 // UnixNano of the last log line about refused requests
	meForbidden atomic.Bool  // VerifyAuto: a token whose Me was refused proved its email by login
	proofs      atomic.Int64
	busy        atomic.Int64
	created     atomic.Int64
	evicted     atomic.Int64

	ctx    context.Context // cancelled by Close; parent of every flight
	cancel context.CancelFunc
	wg     sync.WaitGroup // janitor passes and flights in flight

	// mu guards the maps below. The hot path of a
	// returning user takes it for reading only; leases and last use are
	// atomics.
	mu        sync.RWMutex
	pools     map[string]*userPool // by canonical role
	folded    map[string]*userPool // by strings.ToLower(role), for headers in another case
	verified  map[tokenKey]*verified
	failed    map[tokenKey]*failure
	flights   map[flightKey]*flight
	verifying int // capped flights running
	janitor   clock.Timer
	closed    bool
}

// The defaults of Config's zero fields (and MaxVerifiedAge). As everywhere
// in this module, zero means the default; a negative value means off where
// the field says so, and is an error otherwise.
const (
	// DefaultMaxUsers caps the open user pools.
	DefaultMaxUsers = 100
	// DefaultIdleTTL closes a user pool unused this long.
	DefaultIdleTTL = 2 * time.Minute
	// DefaultMaxOpenConnsPerUser caps each user pool.
	DefaultMaxOpenConnsPerUser = 3
	// DefaultVerifiedTTL is how long a verified access token that is not a
	// JWT with an exp claim is remembered.
	DefaultVerifiedTTL = 5 * time.Minute
	// MaxVerifiedAge caps how long any verified token is remembered, even
	// when its exp claim is later.
	MaxVerifiedAge = time.Hour
	// DefaultMaxVerifiedTokens caps the number of remembered tokens.
	DefaultMaxVerifiedTokens = 10000
	// DefaultVerifyTimeout bounds the workspace call of one verification.
	DefaultVerifyTimeout = 10 * time.Second
	// DefaultMaxVerifications caps the verifications in flight.
	DefaultMaxVerifications = 32
	// DefaultFailedTTL is how long a failed verification is remembered.
	DefaultFailedTTL = 30 * time.Second
	// DefaultMaxFailedTokens caps the number of remembered failures.
	DefaultMaxFailedTokens = 10000
)

// withDefaults fills the zero fields of cfg and refuses negative values
// that cannot mean off.
func (cfg *Config) withDefaults() error {
	for _, f := range []struct {
		name string
		neg  bool
	}{
		{"MaxUsers", cfg.MaxUsers < 0}, {"IdleTTL", cfg.IdleTTL < 0}, {"MaxOpenConnsPerUser", cfg.MaxOpenConnsPerUser < 0},
		{"VerifiedTTL", cfg.VerifiedTTL < 0}, {"MaxVerifiedTokens", cfg.MaxVerifiedTokens < 0}, {"VerifyTimeout", cfg.VerifyTimeout < 0},
		{"MaxFailedTokens", cfg.MaxFailedTokens < 0},
	} {
		if f.neg {
			return &connector.ConfigError{Setting: "peruser.Config." + f.name, Problem: "negative", Fix: "use a positive value, or zero for the default"}
		}
	}
	setDefault(&cfg.MaxUsers, DefaultMaxUsers)
	setDefault(&cfg.IdleTTL, DefaultIdleTTL)
	setDefault(&cfg.MaxOpenConnsPerUser, DefaultMaxOpenConnsPerUser)
	setDefault(&cfg.VerifiedTTL, DefaultVerifiedTTL)
	setDefault(&cfg.MaxVerifiedTokens, DefaultMaxVerifiedTokens)
	setDefault(&cfg.VerifyTimeout, DefaultVerifyTimeout)
	setDefault(&cfg.MaxVerifications, DefaultMaxVerifications)
	setDefault(&cfg.FailedTTL, DefaultFailedTTL)
	setDefault(&cfg.MaxFailedTokens, DefaultMaxFailedTokens)
	return nil
}

// setDefault sets *v to def when it is zero.
func setDefault[T int | time.Duration](v *T, def T) {
	if *v == 0 {
		*v = def
	}
}

// New builds the service principal's pool (connector.New resolves its
// configuration once, looking up what is missing with ctx) and starts the
// janitor. User pools are derived from that resolved configuration.
func New(ctx context.Context, cfg Config) (*Manager, error) {
	if err := cfg.withDefaults(); err != nil {
		return nil, err
	}
	if cfg.Verify < VerifyAuto || cfg.Verify > VerifyLogin {
		return nil, &connector.ConfigError{Setting: "peruser.Config.Verify", Problem: "unknown verification method " + cfg.Verify.String(), Fix: "use VerifyAuto, VerifyMe or VerifyLogin"}
	}
	if cfg.clock == nil {
		cfg.clock = clock.System()
	}
	logger := cfg.Base.Logger
	if logger == nil {
		logger = slog.Default()
	}
	spConn, err := connector.New(ctx, cfg.Base)
	if err != nil {
		return nil, err
	}
	m := &Manager{cfg: cfg, logger: logger, clock: cfg.clock, spConn: spConn,
		pools: map[string]*userPool{}, folded: map[string]*userPool{},
		verified: map[tokenKey]*verified{}, failed: map[tokenKey]*failure{}, flights: map[flightKey]*flight{}}
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
	m.busyErr = busyError(cfg.MaxVerifications)
	m.ctx, m.cancel = context.WithCancel(context.Background())
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
	clock.SetTokenOptions(&opts, m.clock)
	opts.Logger, opts.TracerProvider, opts.MeterProvider = u.Logger, r.TracerProvider, r.MeterProvider
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
// token does not prove its email an *AuthError (403); see StatusCode for
// the other errors. With DevFallbackToServicePrincipal a request without
// identity headers gets the service principal's pool.
func (m *Manager) ForRequest(r *http.Request) (*sql.DB, func(), error) {
	db, _, release, err := m.forRequest(r)
	return db, release, err
}

func (m *Manager) forRequest(r *http.Request) (*sql.DB, AuthMode, func(), error) {
	id := identityOf(r)
	if err := id.validateShape(); err != nil {
		if !m.cfg.DevFallbackToServicePrincipal || !noIdentity(r) {
			return nil, "", nil, err
		}
		m.warnOnce.Do(func() {
			m.logger.Warn("peruser: request without a user identity served as the service principal (DevFallbackToServicePrincipal is on; never enable it in production)",
				slog.String("lakebase.auth_mode", string(ServicePrincipal)))
		})
		return m.sp, ServicePrincipal, func() {}, nil
	}
	p, err := m.acquire(r.Context(), id)
	if err != nil {
		return nil, "", nil, err
	}
	return p.db, OnBehalfOfUser, m.releaser(p), nil
}

// noIdentity reports whether r carries neither identity header (only such
// requests may fall back to the service principal).
func noIdentity(r *http.Request) bool {
	return r.Header.Get(HeaderEmail) == "" && r.Header.Get(HeaderAccessToken) == ""
}

// Acquire verifies that id's access token belongs to id.Email (once per
// token; see Config.Verify) and returns the user's pool, held until
// release is called (release is idempotent). The pool is keyed by the
// user's canonical identity (the workspace's spelling), so every spelling
// of one email gets the same pool. A user's first Acquire builds the pool
// and opens its first connection — with the login proof, the proof's own
// connection — so a login that cannot succeed is reported here, as a
// *connector.LoginError, whichever method verified the token. ctx bounds
// the verification, the first login and the wait for another request's.
// The pool is never closed while held.
func (m *Manager) Acquire(ctx context.Context, id Identity) (*sql.DB, func(), error) {
	if err := id.validateShape(); err != nil {
		return nil, nil, err
	}
	p, err := m.acquire(ctx, id)
	if err != nil {
		return nil, nil, err
	}
	return p.db, m.releaser(p), nil
}

// acquire returns id's pool with one lease. The hot path — a remembered
// token whose pool is open — is one SHA-256, a read lock, two map look-ups
// and two atomic adds.
func (m *Manager) acquire(ctx context.Context, id Identity) (*userPool, error) {
	key := tokenKey(sha256.Sum256([]byte(id.AccessToken)))
	now := m.clock.Now()
	m.mu.RLock()
	if e := m.verified[key]; e != nil && now.Before(e.until) && !m.closed {
		e.used.Store(now.UnixNano())
		if p := m.pools[e.who]; p != nil && strings.EqualFold(e.who, id.Email) {
			p.leases.Add(1)
			until := e.until
			m.mu.RUnlock()
			p.used.Store(now.UnixNano())
			p.src.setAccess(id.AccessToken, until, nil)
			return p, nil
		}
	}
	m.mu.RUnlock()
	return m.verify(ctx, key, id)
}

// releaser returns the idempotent release function of one lease of p.
func (m *Manager) releaser(p *userPool) func() {
	var done atomic.Bool
	return func() {
		if done.CompareAndSwap(false, true) {
			p.used.Store(m.clock.Now().UnixNano())
			p.leases.Add(-1)
		}
	}
}

// scheduleLocked arms the janitor (m.mu held). Only New and the janitor's
// own pass call it, so there is exactly one timer chain.
func (m *Manager) scheduleLocked() {
	m.janitor = m.clock.AfterFunc(m.cfg.IdleTTL/2, m.tick)
}

// tick is the janitor: one pass, then the next timer.
func (m *Manager) tick() {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return
	}
	m.wg.Add(1)
	defer m.wg.Done()
	out := m.expiredLocked()
	m.scheduleLocked()
	m.mu.Unlock()
	m.close(out)
}

// expiredLocked removes the pools idle for IdleTTL (m.mu held).
func (m *Manager) expiredLocked() []*userPool {
	now := m.clock.Now().UnixNano()
	var out []*userPool
	for _, p := range m.pools {
		if idle(p) && now-p.used.Load() >= int64(m.cfg.IdleTTL) {
			m.removeLocked(p, true)
			out = append(out, p)
		}
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
	m.mu.RLock()
	st := Stats{OpenPools: len(m.pools), VerifiedTokens: len(m.verified), FailedTokens: len(m.failed), Verifying: m.verifying}
	m.mu.RUnlock()
	st.Created, st.Evicted, st.Verifications, st.Busy = m.created.Load(), m.evicted.Load(), m.proofs.Load(), m.busy.Load()
	return st
}

// Close closes every pool (also pools still held: close the HTTP server
// first), stops the janitor and every verification and first login in
// progress, and waits for them. It is idempotent.
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
	all := make([]*userPool, 0, len(m.pools))
	for _, p := range m.pools {
		all = append(all, p)
	}
	m.pools, m.folded = map[string]*userPool{}, map[string]*userPool{}
	m.verified, m.failed = map[tokenKey]*verified{}, map[tokenKey]*failure{}
	m.mu.Unlock()
	m.cancel()
	m.wg.Wait()
	m.close(all)
	if m.ownTrans != nil {
		m.ownTrans.CloseIdleConnections()
	}
	return m.sp.Close()
}
