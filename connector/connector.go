package connector

import (
	"context"
	"database/sql/driver"
	"errors"
	"io"
	"log/slog"
	"maps"
	"sync"

	"github.com/databricks/databricks-sdk-go/config"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"go.opentelemetry.io/otel/attribute"

	"github.com/lakebase-go/lakebase/internal/sdkclient"
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
	role   string
	db     string
	host   string
	logger *slog.Logger
	cfg    *resolved // behind a pointer: fmt's bad-verb output and %v through unexported fields never reach Password
	login  *loginPolicy
	ws     *workspace // the workspace client (nil when nothing is minted)
	share  *shared    // owned and ws, shared with the readers of Reader (readonly.go)

	dsn string // the settings base was parsed from (placeholder password)

	mu        sync.Mutex
	closed    bool
	closeErr  error
	onCloseFn []func() error
}

var (
	_ driver.Connector = (*Connector)(nil)
	_ io.Closer        = (*Connector)(nil)
)

// New resolves cfg and returns a Connector, in three stages, each once:
//
//  1. every local setting is resolved (explicit fields, then the
//     environment through LookupEnv, then defaults) and validated with no
//     network at all: endpoint or instance form, port, TTL, sslmode, the
//     root certificate file, a pooler host used with tokens;
//  2. only what is still missing is looked up from the workspace: the host
//     (from Endpoint or Instance) and the user (the workspace identity).
//     With Host and User known New makes no network call: the default
//     workspace client is then built by the first token fetch;
//  3. the connector is built.
//
// New returns within ctx: every look-up, including building the default
// workspace client (whose SDK would otherwise retry an unreachable host for
// five minutes), ends when ctx does, and nothing keeps retrying afterwards.
// Errors are *ConfigError values naming the setting to change (for an
// unreachable or refusing workspace: DATABRICKS_HOST). In the default eager
// mode the first token is fetched in the background right away; New itself
// does not wait for it. The ctx is not retained.
func New(ctx context.Context, cfg Config) (*Connector, error) {
	r, err := resolve(cfg)
	if err != nil {
		return nil, err
	}
	var ws *workspace
	if r.Password == "" && r.TokenSource == nil || r.Host == "" || r.User == "" {
		ws = newWorkspace(&r.Config)
	}
	if err := lookup(ctx, &r, ws); err != nil {
		if ws != nil {
			ws.close()
		}
		return nil, err
	}
	conn, err := build(&r, ws)
	if err != nil && ws != nil {
		ws.close()
	}
	return conn, err
}

// build is the last stage of New: no network, no failure a look-up could
// have prevented.
func build(r *resolved, ws *workspace) (*Connector, error) {
	c := &r.Config
	logger := c.Logger
	tlsRes, err := sslmode.Configure(sslmode.Options{Mode: c.SSLMode, Host: c.Host, RootCertPEM: r.rootPEM, Logger: logger})
	if err != nil {
		return nil, sslConfigError(err)
	}
	// The pgx configuration resolve built, with what the look-ups found: a
	// looked-up host is one DNS name, so it replaces the stand-in as it is.
	base, dsn := r.pgx.Copy(), r.dsn
	if c.Host != r.pgxHost {
		base.Host = c.Host
	}
	if c.User != r.pgxUser {
		base.User = c.User
	}
	base.TLSConfig = tlsRes.TLS
	base.Fallbacks = nil // never fall back to plaintext or another mode

	conn := &Connector{
		base:   *base,
		role:   c.User,
		db:     c.Database,
		host:   c.Host,
		logger: logger,
		dsn:    dsn,
		login:  newLoginPolicy(c),
	}
	switch {
	case c.Password != "":
	case c.TokenSource != nil:
		conn.source = c.TokenSource
	default:
		ts, err := newTokenSource(r, ws)
		if err != nil {
			return nil, err
		}
		conn.source = ts
		conn.owned = ts
		conn.ws = ws
	}
	// Close releases it after the OnClose functions; the last connector
	// sharing it closes the workspace (which never waits), then the token
	// source.
	conn.share = newShared(conn.owned, ws)
	conn.cfg = r

	raw := stdlib.GetConnector(conn.base,
		stdlib.OptionBeforeConnect(conn.beforeConnect),
		stdlib.OptionAfterConnect(conn.afterConnect),
		stdlib.OptionResetSession(conn.resetSession))
	conn.conn = &retryConnector{raw: raw, c: conn}
	if c.Telemetry {
		conn.conn = wrapTelemetry(conn.conn, r)
	}
	return conn, nil
}

// newTokenSource builds the Databricks fetcher and its cache. The fetcher
// gets the workspace client on its first call (building the default one
// then, if New did not need it) and binds the client's requests to each
// fetch's ctx.
func newTokenSource(r *resolved, ws *workspace) (*tokensource.Cached, error) {
	c := &r.Config
	var attrs []attribute.KeyValue
	fetcher := func(w *sdkclient.Client) (tokensource.FetchFunc, error) {
		if c.Endpoint != "" {
			return tokensource.EndpointFetcher(w.Postgres, c.Endpoint, tokensource.EndpointOptions{TTL: c.TokenTTL, ReadOnlyTables: c.ReadOnlyTables})
		}
		return tokensource.InstanceFetcher(w.Database, c.Instance)
	}
	if c.Endpoint != "" {
		attrs = append(attrs, attribute.String("lakebase.endpoint", c.Endpoint))
	} else {
		attrs = append(attrs, attribute.String("lakebase.instance", c.Instance))
	}
	if w := ws.built(); w != nil {
		// Checks the endpoint or instance now (the client is there).
		if _, err := fetcher(w); err != nil {
			return nil, &ConfigError{Setting: "Endpoint/Instance", Problem: "cannot build the credential fetcher", Fix: "check the endpoint or instance name", Err: err}
		}
	}
	var (
		mu sync.Mutex
		f  tokensource.FetchFunc
	)
	fetch := func(ctx context.Context) (tokensource.Token, error) {
		w, err := ws.get(ctx, "no token can be minted")
		if err != nil {
			return tokensource.Token{}, err
		}
		mu.Lock()
		if f == nil {
			f, err = fetcher(w)
		}
		cur := f
		mu.Unlock()
		if err != nil {
			return tokensource.Token{}, err
		}
		unbind := w.Bind(ctx)
		defer unbind()
		tok, err := cur(ctx)
		if err != nil && ctx.Err() != nil {
			err = w.Cause(err)
		}
		return tok, err
	}
	opts := c.Token
	opts.Logger, opts.TracerProvider, opts.MeterProvider = c.Logger, c.TracerProvider, c.MeterProvider
	opts.Attributes = append(append([]attribute.KeyValue(nil), attrs...), opts.Attributes...)
	return tokensource.New(fetch, opts), nil
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
// Port, Database, SSLMode, Endpoint or Instance). Its LookupEnv reads
// nothing, so a Config derived from it and passed to New again (for example
// with another User and TokenSource, as package peruser does) reproduces
// these settings without reading the environment or calling the workspace
// for the host. Password, TokenSource, Workspace and WorkspaceConfig are
// those of the original Config; WorkspaceConfig returns the workspace
// settings in use.
func (c *Connector) Config() Config {
	cfg := c.cfg.Config
	cfg.LookupEnv = noEnv
	cfg.RuntimeParams = maps.Clone(cfg.RuntimeParams)
	return cfg
}

// WorkspaceConfig returns the Databricks SDK configuration of the workspace
// client the connector mints tokens with, resolved (host, auth type and
// credentials as the SDK's unified authentication found them): a copy, so
// changing it changes nothing here. A program that needs other workspace
// APIs can build its own client from it, for example
// databricks.NewWorkspaceClient((*databricks.Config)(cfg)). When New did not
// need the workspace (Host and User were known) the default client is built
// now, bounded by ctx like New's look-ups; errors are *ConfigError values
// naming DATABRICKS_HOST. It returns nil, nil when the connector mints
// nothing (Password or TokenSource).
func (c *Connector) WorkspaceConfig(ctx context.Context) (*config.Config, error) {
	if c.ws == nil {
		return nil, nil
	}
	w, err := c.ws.get(ctx, "the workspace settings cannot be resolved")
	if err != nil {
		return nil, asConfigError(err)
	}
	return w.Settings(), nil
}

// auth names how c authenticates.
func (c *Connector) auth() string {
	switch {
	case c.cfg.Password != "":
		return "password"
	case c.owned != nil:
		return "token (" + c.cfg.Token.Mode.String() + ")"
	case c.source != nil:
		return "token source"
	}
	return "none"
}

// noEnv is a LookupEnv that finds nothing.
func noEnv(string) (string, bool) { return "", false }

// ConnConfig returns a copy of the base pgx configuration (no password).
func (c *Connector) ConnConfig() *pgx.ConnConfig { return c.base.Copy() }

// onClose registers f to run when the connector is closed (used by OpenDB
// to unregister pool metrics). Functions run in reverse order of
// registration, outside the connector's lock, so f may call methods of c.
// If c is already closed, f runs at once.
func (c *Connector) onClose(f func() error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		_ = f()
		return
	}
	c.onCloseFn = append(c.onCloseFn, f)
	c.mu.Unlock()
}

// Close stops the token source the connector created and runs onClose
// functions. It is idempotent; sql.DB.Close calls it. A TokenSource passed in
// Config is not closed. After Close, Connect and BeforeConnect fail with an
// error that errors.Is tokensource.ErrClosed.
func (c *Connector) Close() error {
	c.mu.Lock()
	if c.closed {
		err := c.closeErr
		c.mu.Unlock()
		return err
	}
	c.closed = true
	fns := c.onCloseFn
	c.onCloseFn = nil
	c.mu.Unlock()

	var errs []error
	for i := len(fns) - 1; i >= 0; i-- {
		errs = append(errs, fns[i]())
	}
	errs = append(errs, c.share.release())
	err := errors.Join(errs...)
	c.mu.Lock()
	c.closeErr = err
	c.mu.Unlock()
	return err
}

func (c *Connector) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}
