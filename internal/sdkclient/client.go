package sdkclient

import (
	"context"
	"net/http"
	"reflect"

	"github.com/databricks/databricks-sdk-go/client"
	"github.com/databricks/databricks-sdk-go/config"
	"github.com/databricks/databricks-sdk-go/service/database"
	"github.com/databricks/databricks-sdk-go/service/iam"
	"github.com/databricks/databricks-sdk-go/service/postgres"
)

// Client is the part of a Databricks workspace client the library calls.
// Its field names are those of *databricks.WorkspaceClient and
// connector.Workspace, so code written against one reads the same against
// the others.
type Client struct {
	Config      *config.Config
	Postgres    Postgres
	Database    Database
	CurrentUser CurrentUser

	t        *boundTransport // nil for a client the caller built
	settings *config.Config  // the settings when built (never used by a client)
}

// Postgres is what the library calls of the SDK's postgres service.
type Postgres interface {
	GenerateDatabaseCredential(ctx context.Context, request postgres.GenerateDatabaseCredentialRequest) (*postgres.DatabaseCredential, error)
	GetEndpoint(ctx context.Context, request postgres.GetEndpointRequest) (*postgres.Endpoint, error)
}

// Database is what the library calls of the SDK's database service.
type Database interface {
	GenerateDatabaseCredential(ctx context.Context, request database.GenerateDatabaseCredentialRequest) (*database.DatabaseCredential, error)
	GetDatabaseInstance(ctx context.Context, request database.GetDatabaseInstanceRequest) (*database.DatabaseInstance, error)
}

// CurrentUser is what the library calls of the SDK's iam current-user
// service.
type CurrentUser interface {
	Me(ctx context.Context, request iam.MeRequest) (*iam.User, error)
}

// The SDK's service types are only ever called directly, never stored in
// an interface or in a field of a type that is: a program that calls
// methods by reflection (text/template, which the SDK links, does) keeps
// every exported method of every type reachable from an interface value,
// so holding a *postgres.PostgresAPI would keep all of its calls and their
// types (measured: 1 MB of a stripped binary). A service value costs one
// small allocation per call.
type calls struct{ dc *client.DatabricksClient }

type (
	postgresCalls calls
	databaseCalls calls
	meCalls       calls
)

func (p postgresCalls) GenerateDatabaseCredential(ctx context.Context, r postgres.GenerateDatabaseCredentialRequest) (*postgres.DatabaseCredential, error) {
	return postgres.NewPostgres(p.dc).GenerateDatabaseCredential(ctx, r)
}

func (p postgresCalls) GetEndpoint(ctx context.Context, r postgres.GetEndpointRequest) (*postgres.Endpoint, error) {
	return postgres.NewPostgres(p.dc).GetEndpoint(ctx, r)
}

func (d databaseCalls) GenerateDatabaseCredential(ctx context.Context, r database.GenerateDatabaseCredentialRequest) (*database.DatabaseCredential, error) {
	return database.NewDatabase(d.dc).GenerateDatabaseCredential(ctx, r)
}

func (d databaseCalls) GetDatabaseInstance(ctx context.Context, r database.GetDatabaseInstanceRequest) (*database.DatabaseInstance, error) {
	return database.NewDatabase(d.dc).GetDatabaseInstance(ctx, r)
}

func (m meCalls) Me(ctx context.Context, r iam.MeRequest) (*iam.User, error) {
	return iam.NewCurrentUser(m.dc).Me(ctx, r)
}

// FromServices returns a Client that calls a caller's services (cfg may
// be nil). Its requests are the caller's: Bind and Close do nothing.
func FromServices(cfg *config.Config, pg Postgres, db Database, me CurrentUser) *Client {
	c := &Client{Config: cfg, Postgres: pg, Database: db, CurrentUser: me}
	if cfg != nil {
		c.settings = copyConfig(cfg)
	}
	return c
}

// Host returns the workspace URL, or "" if it is not known.
func (c *Client) Host() string {
	if c == nil || c.Config == nil {
		return ""
	}
	return c.Config.Host
}

// Build builds a Client from a copy of cfg's exported settings (nil: the
// SDK's unified authentication from the environment and profiles; cfg
// itself is never changed), its requests bound by ctx while it is built.
// The SDK resolves the configuration and, for OAuth, discovers the
// workspace's endpoints; Build returns when that is done or when ctx is,
// whichever comes first. A transport set in cfg is used underneath the
// bound one.
func Build(ctx context.Context, cfg *config.Config) (*Client, error) {
	own := copyConfig(cfg)
	t := &boundTransport{base: own.HTTPTransport, user: own.HTTPTransport}
	if t.base == nil {
		t.base = newTransport()
	}
	own.HTTPTransport = t
	if own.HostMetadataResolver == nil {
		// The SDK probes /.well-known/databricks-config with
		// context.Background(), so its retry loop would sleep on after ctx
		// ends; run the same probe with ctx instead.
		own.HostMetadataResolver = func(_ context.Context, host string) (*config.HostMetadata, error) {
			return own.DefaultHostMetadataResolver()(ctx, host)
		}
	}
	unbind := t.bind(ctx)
	type result struct {
		c   *Client
		err error
	}
	done := make(chan result, 1)
	go func() {
		c, err := newClient(own)
		done <- result{c, err}
	}()
	select {
	case r := <-done:
		unbind()
		if r.err == nil {
			r.err = ctx.Err()
		}
		if r.err != nil {
			t.closeIdle()
			return nil, t.cause(r.err)
		}
		r.c.t = t
		r.c.settings = copyConfig(own) // before any request can change it
		r.c.settings.HTTPTransport = t.user
		return r.c, nil
	case <-ctx.Done():
		// The transport stays bound to the ended ctx, so it fails every
		// further request of the SDK goroutine at once, with an error no
		// SDK retry loop matches: the goroutine returns without a retry
		// sleep.
		return nil, t.cause(ctx.Err())
	}
}

// PAT returns a client for host that authenticates with token only: it
// reads nothing from the environment or profiles, skips the host-metadata
// lookup and makes no network call. rt is the HTTP transport (nil: one of
// the client's own), for example one shared by many short-lived clients.
func PAT(host, token string, rt http.RoundTripper) (*Client, error) {
	t := &boundTransport{base: rt, user: rt}
	if t.base == nil {
		t.base = newTransport()
	}
	c, err := newClient(PATConfig(host, token, t))
	if err != nil {
		return nil, err
	}
	c.t = t
	c.settings = copyConfig(c.Config)
	c.settings.HTTPTransport = rt
	return c, nil
}

// PATConfig is the SDK configuration PAT builds on: host and token only,
// nothing from the environment or profiles, no host-metadata lookup, rt as
// the HTTP transport (nil: the SDK's default).
func PATConfig(host, token string, rt http.RoundTripper) *config.Config {
	return &config.Config{
		Host:                 host,
		Token:                token,
		Credentials:          config.PatCredentials{},
		AuthType:             "pat",
		Loaders:              []config.Loader{noLoader{}},
		HostMetadataResolver: func(context.Context, string) (*config.HostMetadata, error) { return nil, nil },
		HTTPTransport:        rt,
	}
}

func newClient(cfg *config.Config) (*Client, error) {
	dc, err := client.New(cfg)
	if err != nil {
		return nil, err
	}
	return &Client{
		Config:      cfg,
		Postgres:    postgresCalls{dc},
		Database:    databaseCalls{dc},
		CurrentUser: meCalls{dc},
	}, nil
}

// Settings returns a copy of the client's SDK configuration as it was when
// the client was built (resolved from the environment and profiles, before
// any request; for a client from FromServices, when FromServices was
// called), with the caller's HTTP transport (nil for a client built with
// the default one) in place of the bound transport, for building other
// clients. A client's live Config cannot be copied: the SDK changes it
// under its own lock while authenticating.
func (c *Client) Settings() *config.Config {
	if c == nil || c.settings == nil {
		return nil
	}
	return copyConfig(c.settings)
}

// Bind binds the client's requests to ctx until the returned function is
// called: every request made meanwhile, whatever context the SDK gives it,
// ends when ctx does, and requests after ctx has ended fail at once. Binds
// nest (the innermost applies until it is undone). It does nothing for a
// client from FromServices.
func (c *Client) Bind(ctx context.Context) (unbind func()) {
	if c == nil || c.t == nil {
		return func() {}
	}
	return c.t.bind(ctx)
}

// Cause returns err joined with the last network failure the client's
// transport saw (if err does not already carry it), so that a caller whose
// ctx ended learns why the workspace did not answer.
func (c *Client) Cause(err error) error {
	if c == nil || c.t == nil || err == nil {
		return err
	}
	return c.t.cause(err)
}

// Close closes the client's idle connections to the workspace (a shared
// transport's too). It does nothing for a client from FromServices.
func (c *Client) Close() {
	if c != nil && c.t != nil {
		c.t.closeIdle()
	}
}

// copyConfig returns a new config with cfg's exported settings (the SDK's
// Config holds a mutex and resolution state, so it cannot be copied as a
// value; an unresolved copy resolves on its own).
func copyConfig(cfg *config.Config) *config.Config {
	own := &config.Config{}
	if cfg == nil {
		return own
	}
	src, dst := reflect.ValueOf(cfg).Elem(), reflect.ValueOf(own).Elem()
	for i := 0; i < src.NumField(); i++ {
		if src.Type().Field(i).IsExported() {
			dst.Field(i).Set(src.Field(i))
		}
	}
	return own
}

type noLoader struct{}

func (noLoader) Name() string                   { return "lakebase-no-loader" }
func (noLoader) Configure(*config.Config) error { return nil }
