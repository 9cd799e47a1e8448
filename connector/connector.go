package connector

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/XSAM/otelsql"
	"github.com/databricks/databricks-sdk-go"
	"github.com/databricks/databricks-sdk-go/service/database"
	"github.com/databricks/databricks-sdk-go/service/iam"
	"github.com/databricks/databricks-sdk-go/service/postgres"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"go.opentelemetry.io/otel/attribute"

	"github.com/lakebase-go/lakebase/sslmode"
	"github.com/lakebase-go/lakebase/tokensource"
)

// Connector is a database/sql driver.Connector for one Lakebase database.
// Every new physical connection logs in with the current token of its token
// source. It is safe for concurrent use. Close stops the token source it
// owns; sql.DB.Close calls it.
type Connector struct {
	conn   driver.Connector // the connector handed to database/sql (maybe otelsql-wrapped)
	base   pgx.ConnConfig   // never mutated after New
	source tokensource.Source
	owned  io.Closer // the token source this connector created, if any
	static string    // native Postgres password, if configured
	role   string
	db     string
	host   string
	logger *slog.Logger
	cfg    resolved

	dsn string // the settings base was parsed from (placeholder password)

	mu        sync.Mutex
	maxLife   time.Duration // per-connection lifetime set by OpenDB
	jitter    float64
	closed    bool
	closeErr  error
	onCloseFn []func() error
}

var (
	_ driver.Connector = (*Connector)(nil)
	_ io.Closer        = (*Connector)(nil)
)

// New resolves cfg (environment fallbacks, host and user lookups), validates
// it and returns a Connector. Configuration problems are *ConfigError values
// naming the setting. In the default eager mode the first token is fetched in
// the background right away; New itself does not wait for it.
//
// The ctx bounds only the lookups New makes; it is not retained.
func New(ctx context.Context, cfg Config) (*Connector, error) {
	r, err := withEnv(cfg)
	if err != nil {
		return nil, err
	}
	c := &r.Config
	logger := c.Logger

	tokenAuth := c.Password == "" && c.TokenSource == nil
	needWorkspace := tokenAuth || c.Host == "" || c.User == ""
	if needWorkspace && c.Workspace == nil {
		w, err := databricks.NewWorkspaceClient()
		if err != nil {
			return nil, &ConfigError{Setting: "Workspace", Problem: "cannot create a Databricks workspace client", Fix: "set DATABRICKS_HOST and credentials (DATABRICKS_CLIENT_ID/DATABRICKS_CLIENT_SECRET, a profile, ...) or pass Config.Workspace", Err: err}
		}
		c.Workspace = w
	}

	if err := resolveHost(ctx, &r); err != nil {
		return nil, err
	}
	if c.User == "" {
		me, err := c.Workspace.CurrentUser.Me(ctx, iam.MeRequest{})
		if err != nil || me == nil || me.UserName == "" {
			if err == nil {
				err = errors.New("the workspace returned no user name")
			}
			return nil, &ConfigError{Setting: "User (" + EnvUser + ")", Problem: "cannot look up the Postgres role from the workspace identity", Fix: "set Config.User or PGUSER to your Databricks user email or service principal application id", Err: err}
		}
		c.User = me.UserName
	}

	tlsRes, err := sslmode.Configure(sslmode.Options{Mode: c.SSLMode, Host: c.Host, RootCert: c.SSLRootCert, Logger: logger})
	if err != nil {
		return nil, &ConfigError{Setting: "SSLMode/SSLRootCert (" + EnvSSLMode + "/" + EnvSSLRootCert + ")", Problem: "invalid TLS settings", Fix: "see the message above; the default verify-full works with Lakebase", Err: err}
	}

	base, dsn, err := pgxConfig(&r)
	if err != nil {
		return nil, err
	}
	base.TLSConfig = tlsRes.TLS
	base.Fallbacks = nil // never fall back to plaintext or another mode

	conn := &Connector{
		base:   *base,
		role:   c.User,
		db:     c.Database,
		host:   c.Host,
		logger: logger,
		cfg:    r,
		static: c.Password,
		dsn:    dsn,
	}

	switch {
	case c.Password != "":
	case c.TokenSource != nil:
		conn.source = c.TokenSource
	default:
		ts, err := newTokenSource(&r)
		if err != nil {
			return nil, err
		}
		conn.source = ts
		conn.owned = ts
	}

	raw := stdlib.GetConnector(conn.base,
		stdlib.OptionBeforeConnect(conn.beforeConnect),
		stdlib.OptionAfterConnect(conn.afterConnect),
		stdlib.OptionResetSession(conn.resetSession))
	conn.conn = &retryConnector{raw: raw, c: conn}
	if c.Telemetry {
		conn.conn = wrapTelemetry(conn.conn, &r)
	}
	return conn, nil
}

// newTokenSource builds the Databricks fetcher and its cache.
func newTokenSource(r *resolved) (*tokensource.Cached, error) {
	c := &r.Config
	var (
		fetch tokensource.FetchFunc
		err   error
		attrs []attribute.KeyValue
	)
	if c.Endpoint != "" {
		fetch, err = tokensource.EndpointFetcher(c.Workspace, c.Endpoint, tokensource.EndpointOptions{TTL: c.TokenTTL})
		attrs = append(attrs, attribute.String("lakebase.endpoint", c.Endpoint))
	} else {
		fetch, err = tokensource.InstanceFetcher(c.Workspace, c.Instance)
		attrs = append(attrs, attribute.String("lakebase.instance", c.Instance))
	}
	if err != nil {
		return nil, &ConfigError{Setting: "Endpoint/Instance", Problem: "cannot build the credential fetcher", Fix: "check the endpoint or instance name", Err: err}
	}
	opts := c.Token
	if opts.Logger == nil {
		opts.Logger = c.Logger
	}
	if opts.TracerProvider == nil {
		opts.TracerProvider = c.TracerProvider
	}
	if opts.MeterProvider == nil {
		opts.MeterProvider = c.MeterProvider
	}
	opts.Attributes = append(append([]attribute.KeyValue(nil), attrs...), opts.Attributes...)
	return tokensource.New(fetch, opts), nil
}

// resolveHost fills Host from the endpoint or instance when it is empty, and
// warns once when an explicit host disagrees with the resolved one.
func resolveHost(ctx context.Context, r *resolved) error {
	c := &r.Config
	if c.Endpoint == "" && c.Instance == "" {
		return nil
	}
	if c.Host != "" && c.Workspace == nil {
		return nil
	}
	var (
		host    string
		err     error
		setting string
	)
	if c.Endpoint != "" {
		setting = "Endpoint (" + EnvEndpoint + ")"
		var ep *postgres.Endpoint
		ep, err = c.Workspace.Postgres.GetEndpoint(ctx, postgres.GetEndpointRequest{Name: c.Endpoint})
		if err == nil && ep != nil && ep.Status != nil && ep.Status.Hosts != nil {
			host = ep.Status.Hosts.Host
		}
	} else {
		setting = "Instance (" + EnvInstance + ")"
		var inst *database.DatabaseInstance
		inst, err = c.Workspace.Database.GetDatabaseInstance(ctx, database.GetDatabaseInstanceRequest{Name: c.Instance})
		if err == nil && inst != nil {
			host = inst.ReadWriteDns
		}
	}
	if c.Host != "" {
		// An explicit host wins. Compare only to warn about a likely mistake.
		if err == nil && host != "" && !strings.EqualFold(host, c.Host) {
			c.Logger.Warn("connector: the configured host differs from the host of the endpoint/instance; using the configured host",
				slog.String("host", c.Host), slog.String("resolved_host", host), slog.Bool("host_from_env", r.hostFromEnv))
		}
		return nil
	}
	if err != nil {
		return &ConfigError{Setting: setting, Problem: "cannot look up the Postgres host", Fix: "check the name and your workspace permissions, or set Config.Host / PGHOST", Err: err}
	}
	if host == "" {
		return &ConfigError{Setting: setting, Problem: "the workspace reported no host (is the compute running?)", Fix: "set Config.Host / PGHOST, or start the endpoint"}
	}
	c.Host = host
	return nil
}

// pgxConfig builds the base pgx configuration without a password. It passes
// every setting explicitly so that pgx reads nothing it was not told to
// (no ~/.pgpass lookup: a placeholder password is cleared afterwards).
func pgxConfig(r *resolved) (*pgx.ConnConfig, string, error) {
	c := &r.Config
	kv := []string{
		"host=" + quoteDSN(c.Host),
		"port=" + strconv.Itoa(c.Port),
		"dbname=" + quoteDSN(c.Database),
		"user=" + quoteDSN(c.User),
		"password=placeholder",
		"sslmode=disable",
		"target_session_attrs=any",
		"application_name=" + quoteDSN(c.AppName),
	}
	dsn := strings.Join(kv, " ")
	pc, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, "", &ConfigError{Setting: "Host/Port/Database/User", Problem: "pgx cannot use these settings", Fix: "check the values (and PGSERVICE/PGSERVICEFILE in the environment)", Err: errors.New(redactParseError(err))}
	}
	pc.Password = ""
	pc.ConnectTimeout = c.ConnectTimeout
	if c.QueryExecMode != 0 {
		pc.DefaultQueryExecMode = c.QueryExecMode
	}
	for k, v := range c.RuntimeParams {
		pc.RuntimeParams[k] = v
	}
	return pc, dsn, nil
}

// redactParseError keeps a pgx parse error message but never the connection
// string it may quote (which holds only a placeholder password, but callers
// should not have to know that).
func redactParseError(err error) string {
	msg := err.Error()
	if i := strings.Index(msg, "cannot parse `"); i >= 0 {
		if j := strings.Index(msg[i+14:], "`"); j >= 0 {
			msg = msg[:i] + "cannot parse connection settings" + msg[i+14+j+1:]
		}
	}
	return msg
}

func quoteDSN(s string) string {
	if s != "" && !strings.ContainsAny(s, " '\\\t\n\r") {
		return s
	}
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}

// tokenKey carries the token chosen by Connect into beforeConnect.
type tokenKey struct{}

// beforeConnect sets the password on pgx's per-connection copy of the base
// configuration. It never touches the shared base.
func (c *Connector) beforeConnect(ctx context.Context, cc *pgx.ConnConfig) error {
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
// password of the per-connection config copy. Use PoolConfig for a complete
// pgxpool configuration. The pgxpool path rotates tokens like the
// database/sql path but cannot retry a refused login: pgxpool offers no hook
// for it, so a revoked token is replaced at the next refresh.
func (c *Connector) BeforeConnect(ctx context.Context, cc *pgx.ConnConfig) error {
	if c.isClosed() {
		return fmt.Errorf("connector: %w", errClosed)
	}
	return c.beforeConnect(ctx, cc)
}

// Connect opens a new physical connection with the current token. It
// implements driver.Connector.
func (c *Connector) Connect(ctx context.Context) (driver.Conn, error) {
	return c.conn.Connect(ctx)
}

// Driver implements driver.Connector. It returns pgx's stdlib driver (or its
// otelsql wrapper with Telemetry).
func (c *Connector) Driver() driver.Driver { return c.conn.Driver() }

// Role returns the Postgres role this connector logs in as.
func (c *Connector) Role() string { return c.role }

// Host returns the Postgres host this connector connects to.
func (c *Connector) Host() string { return c.host }

// Database returns the database name.
func (c *Connector) Database() string { return c.db }

// TokenSource returns the source of passwords, or nil with a static
// Password.
func (c *Connector) TokenSource() tokensource.Source { return c.source }

// Config returns the configuration New resolved: every field after the
// environment fallbacks, the defaults and the workspace look-ups (Host, User,
// Port, Database, SSLMode, Endpoint or Instance, and the Workspace client New
// built when none was given). Its LookupEnv reads nothing, so a Config
// derived from it and passed to New again (for example with another User and
// TokenSource, as package peruser does) reproduces these settings without
// reading the environment or calling the workspace for the host. Password and
// TokenSource are those of the original Config.
func (c *Connector) Config() Config {
	cfg := c.cfg.Config
	cfg.LookupEnv = noEnv
	cfg.RuntimeParams = maps.Clone(cfg.RuntimeParams)
	return cfg
}

// noEnv is a LookupEnv that finds nothing.
func noEnv(string) (string, bool) { return "", false }

// ConnConfig returns a copy of the base pgx configuration (no password).
func (c *Connector) ConnConfig() *pgx.ConnConfig { return c.base.Copy() }

// OnClose registers f to run when the connector is closed (used by OpenDB
// to unregister pool metrics). Functions run in reverse order of
// registration.
func (c *Connector) OnClose(f func() error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		_ = f()
		return
	}
	c.onCloseFn = append(c.onCloseFn, f)
}

// Close stops the token source the connector created and runs OnClose
// functions. It is idempotent; sql.DB.Close calls it. A TokenSource passed in
// Config is not closed.
func (c *Connector) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return c.closeErr
	}
	c.closed = true
	var errs []error
	for i := len(c.onCloseFn) - 1; i >= 0; i-- {
		errs = append(errs, c.onCloseFn[i]())
	}
	c.onCloseFn = nil
	if c.owned != nil {
		errs = append(errs, c.owned.Close())
	}
	c.closeErr = errors.Join(errs...)
	return c.closeErr
}

func (c *Connector) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

var errClosed = errors.New("connector closed")

// retryConnector does the token bookkeeping around pgx's stdlib connector:
// it picks the token, and on an authentication failure forces one refresh
// and retries once.
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
	if c.source == nil {
		conn, err := rc.raw.Connect(ctx)
		return conn, rc.wrapErr(err)
	}
	tok, err := c.source.Token(ctx)
	if err != nil {
		return nil, fmt.Errorf("connector: no token for role %q: %w", c.role, err)
	}
	conn, err := rc.raw.Connect(context.WithValue(ctx, tokenKey{}, tok))
	if err == nil {
		return conn, nil
	}
	code, auth := authFailureCode(err)
	refresher, canRefresh := c.source.(tokensource.Refresher)
	if !auth || !canRefresh {
		return nil, rc.wrapErr(err)
	}
	c.logger.Warn("connector: login refused with a cached token; refreshing the token and retrying once",
		slog.String("role", c.role), slog.String("sqlstate", code))
	fresh, rerr := refresher.Refresh(ctx, tok)
	if rerr != nil {
		return nil, fmt.Errorf("connector: login for role %q refused (SQLSTATE %s) and the token refresh failed: %w", c.role, code, rerr)
	}
	conn, err = rc.raw.Connect(context.WithValue(ctx, tokenKey{}, fresh))
	if err == nil {
		return conn, nil
	}
	return nil, rc.wrapErr(err)
}

// wrapErr turns an authentication failure into a *LoginError and wraps
// everything else with the package prefix.
func (rc *retryConnector) wrapErr(err error) error {
	if err == nil {
		return nil
	}
	if code, ok := authFailureCode(err); ok {
		return &LoginError{Role: rc.c.role, Database: rc.c.db, Code: code, Err: err}
	}
	return fmt.Errorf("connector: connect to %s as %q: %w", rc.c.host, rc.c.role, err)
}

// wrapTelemetry instruments conn with otelsql. otelsql only exposes its
// connector wrapper through driver.DriverContext, so a tiny driver hands
// conn to it.
func wrapTelemetry(conn driver.Connector, r *resolved) driver.Connector {
	wrapped, err := otelsql.WrapDriver(connectorDriver{conn}, otelOptions(r)...).(driver.DriverContext).OpenConnector("")
	if err != nil { // connectorDriver.OpenConnector cannot fail
		return conn
	}
	return wrapped
}

func otelOptions(r *resolved) []otelsql.Option {
	c := &r.Config
	opts := []otelsql.Option{
		otelsql.WithAttributes(
			attribute.String("db.system.name", "postgresql"),
			attribute.String("db.namespace", c.Database),
			attribute.String("server.address", c.Host),
			attribute.Int("server.port", c.Port),
		),
		otelsql.WithSpanOptions(otelsql.SpanOptions{OmitConnResetSession: true, OmitRows: true}),
	}
	if c.TracerProvider != nil {
		opts = append(opts, otelsql.WithTracerProvider(c.TracerProvider))
	}
	if c.MeterProvider != nil {
		opts = append(opts, otelsql.WithMeterProvider(c.MeterProvider))
	}
	return opts
}

// connectorDriver adapts a driver.Connector to driver.DriverContext so that
// otelsql.WrapDriver can wrap it.
type connectorDriver struct{ c driver.Connector }

func (d connectorDriver) Open(string) (driver.Conn, error) {
	return nil, errors.New("connector: Open by name is not supported; use the Connector")
}

func (d connectorDriver) OpenConnector(string) (driver.Connector, error) { return d.c, nil }

// registerStats registers otelsql's sql.DBStats metrics for db and arranges
// for the registration to be removed when the connector closes.
func (c *Connector) registerStats(db *sql.DB) error {
	if !c.cfg.Telemetry {
		return nil
	}
	opts := otelOptions(&c.cfg)
	reg, err := otelsql.RegisterDBStatsMetrics(db, opts...)
	if err != nil {
		return fmt.Errorf("connector: register pool metrics: %w", err)
	}
	c.OnClose(func() error { return reg.Unregister() })
	return nil
}
