package connector

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/XSAM/otelsql"
	"github.com/databricks/databricks-sdk-go/config"
	"github.com/jackc/pgx/v5"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/lakebase-go/lakebase/sslmode"
	"github.com/lakebase-go/lakebase/tokensource"
)

// DefaultDatabase is the database used when neither Config.Database nor
// PGDATABASE is set: the database every Lakebase project starts with.
const DefaultDatabase = "databricks_postgres"

// DefaultPort is the Postgres port used when neither Config.Port nor PGPORT
// is set.
const DefaultPort = 5432

// DefaultAppName is the application_name sent when neither Config.AppName
// nor PGAPPNAME is set.
const DefaultAppName = "lakebase-go"

// Config describes how to reach one Lakebase database. Every zero field falls
// back to an environment variable (the ones a Databricks App is given), then
// to a default; the comment on each field says which. Explicit fields always
// win over the environment.
type Config struct {
	// Endpoint is the autoscaling endpoint resource name,
	// "projects/{project}/branches/{branch}/endpoints/{endpoint}".
	// Zero: LAKEBASE_ENDPOINT. Exactly one of Endpoint and Instance is needed
	// unless TokenSource or Password is set.
	Endpoint string

	// Instance is the name of a provisioned Lakebase database instance (the
	// older product). Zero: LAKEBASE_INSTANCE.
	Instance string

	// Host is the Postgres host name. Zero: PGHOST, else resolved from
	// Endpoint or Instance through the workspace API.
	Host string

	// Port is the Postgres port. Zero: PGPORT, else 5432.
	Port int

	// Database is the database name. Zero: PGDATABASE, else
	// "databricks_postgres".
	Database string

	// User is the Postgres role: a user's email or a service principal's
	// application id. Zero: PGUSER, else DATABRICKS_CLIENT_ID, else the
	// workspace identity (GET /api/2.0/preview/scim/v2/Me). A failed lookup
	// is an error; the user is never silently empty.
	User string

	// SSLMode is the libpq sslmode. Zero: PGSSLMODE, else "verify-full".
	// "require", "verify-ca" and "prefer" are upgraded to "verify-full";
	// "allow" and unknown values are rejected. See package sslmode.
	SSLMode string

	// SSLRootCert is a PEM file of CA certificates that replaces the system
	// roots, or "system". Zero: PGSSLROOTCERT, else the system roots.
	SSLRootCert string

	// AppName is sent as application_name. Zero: PGAPPNAME, else
	// DefaultAppName ("lakebase-go").
	AppName string

	// Workspace is a workspace client of the caller's to mint tokens and
	// look up the host and user with, for example the services of a
	// *databricks.WorkspaceClient (see Workspace). Nil: a client of the
	// connector's own, built from WorkspaceConfig with only the services it
	// calls. It is only created when needed.
	Workspace *Workspace

	// WorkspaceConfig holds the Databricks SDK settings of the connector's
	// own workspace client when Workspace is nil: host, auth type,
	// credentials, profile, rate limit, HTTP transport. It is copied, never
	// changed. Nil: the SDK's unified authentication from the environment
	// and ~/.databrickscfg (DATABRICKS_HOST with DATABRICKS_CLIENT_ID/SECRET,
	// DATABRICKS_TOKEN, DATABRICKS_CONFIG_PROFILE, ...). Setting both
	// Workspace and WorkspaceConfig is an error.
	WorkspaceConfig *config.Config

	// TokenSource, if set, supplies the password instead of the workspace
	// API. The connector does not close it. If it also implements
	// tokensource.Refresher, a rejected login forces one refresh.
	TokenSource tokensource.Source

	// Password, if set, is a static password for native Postgres
	// authentication: no token is minted and nothing is refreshed.
	Password string

	// Token configures the token cache the connector builds (refresh mode,
	// early refresh, safety margin, retries). Zero: eager refresh with the
	// defaults of package tokensource. Its Logger, TracerProvider and
	// MeterProvider must be nil: the cache uses this Config's (one of each
	// per Config).
	Token tokensource.Options

	// TokenTTL asks the workspace for tokens of this lifetime (5 min to 1 h;
	// autoscaling endpoints only). Zero: the service default (1 h).
	TokenTTL time.Duration

	// ReadOnly makes a connector for reads, on a read-only host. With
	// Endpoint (or Instance) the read-only host is looked up
	// (status.hosts.read_only_host: the endpoint's readable secondaries, or
	// a read replica's own endpoint; an instance's read_only_dns), and a
	// Host from PGHOST (in a Databricks App: the primary's) is ignored; if
	// there is no read-only host New fails with a *ConfigError naming
	// ReadOnly instead of connecting to the writable primary. An explicit
	// Host is connected to as given. Every new connection checks that its
	// session is read-only (a hot standby, or default_transaction_read_only
	// on; PostgreSQL 14+ reports both at login, so the check costs no round
	// trip) and fails with a *ConfigError otherwise. A write on it fails
	// with SQLSTATE 25006 (a *pgconn.PgError). Connector.Reader derives a
	// reader from a writer with the same workspace client and token source.
	// Zero: PGTARGETSESSIONATTRS "read-only" or "standby" (libpq's values)
	// turn it on; "any", "read-write" and "primary" leave it off;
	// "prefer-standby" is refused (no silent fallback to the primary).
	ReadOnly bool

	// ReadOnlyTables asks for credentials with a READ_ONLY permission-set
	// claim on these Unity Catalog tables (catalog.schema.table; see
	// tokensource.EndpointOptions.ReadOnlyTables), for tokens the connector
	// mints for an autoscaling endpoint. It is independent of ReadOnly.
	// Zero: no claims.
	ReadOnlyTables []string

	// ConnectTimeout bounds one new physical connection: TCP, TLS and
	// authentication, including the retries that ride out a cold start (an
	// endpoint waking from scale to zero answers with refused connections,
	// SQLSTATE class 08 or 57P03 for a while). Zero: PGCONNECT_TIMEOUT, else
	// DefaultConnectTimeout (60 s). The caller's context bounds it too.
	ConnectTimeout time.Duration

	// ForcedRefreshInterval is the least time between two token refreshes
	// forced by refused logins (see the package documentation's login
	// policy): a refused credential forces at most one refresh per refused
	// token and per interval. A refusal inside the interval is deferred: the
	// first connection after it forces the refresh. A forced refresh that
	// fails is retried by a later connection after 1 s, doubling up to the
	// interval. Zero: DefaultForcedRefreshInterval (30 s); negative: no
	// interval limit (still once per refused token; failed refreshes are
	// retried up to 30 s apart).
	ForcedRefreshInterval time.Duration

	// QueryExecMode is pgx's default query execution mode. Zero: pgx's
	// default (cached prepared statements). Use
	// pgx.QueryExecModeSimpleProtocol or QueryExecModeExec behind a
	// transaction-mode connection pooler (what GORM calls
	// PreferSimpleProtocol).
	QueryExecMode pgx.QueryExecMode

	// RuntimeParams are extra Postgres run-time parameters sent at login
	// (for example "search_path").
	RuntimeParams map[string]string

	// Logger receives warnings (a host that disagrees with the endpoint,
	// sslmode=disable on a remote host) and token refresh failures. Nil:
	// slog.Default().
	Logger *slog.Logger

	// Telemetry wraps connections with otelsql spans and the
	// db.client.operation.duration histogram. Token fetch spans and metrics
	// are always emitted by the token source.
	Telemetry bool

	// TracerProvider is used for telemetry. Nil: the OpenTelemetry global.
	TracerProvider trace.TracerProvider
	// MeterProvider is used for telemetry. Nil: the OpenTelemetry global.
	MeterProvider metric.MeterProvider

	// BeforeConnect, if set, edits each new connection's copy of the pgx
	// configuration: register a Tracer (otelpgx, tracelog), a DialFunc, an
	// OnNotice handler, ... It runs after the connector's own settings and
	// before the password is set, so it never sees the token (and a
	// Password it sets is overwritten). An error fails that connection. It
	// applies to OpenDB, the lakebase driver and PoolConfig alike.
	BeforeConnect func(ctx context.Context, cc *pgx.ConnConfig) error

	// AfterConnect, if set, runs on each new connection after the
	// connector's own after-connect step: register custom types (pgvector,
	// enums) with conn.TypeMap(), set session state, ... An error closes
	// the connection and fails the connect with that error. It applies to
	// OpenDB, the lakebase driver and PoolConfig alike.
	AfterConnect func(ctx context.Context, conn *pgx.Conn) error

	// TelemetryOptions are appended to the connector's otelsql options
	// when Telemetry is on, so they win. The defaults are lean: one span
	// per query, exec, transaction and connect, the
	// db.client.operation.duration metric, and no spans for Rows
	// iteration, session resets, prepares or pings. To get them back:
	// otelsql.WithSpanOptions(otelsql.SpanOptions{Ping: true, ...}).
	TelemetryOptions []otelsql.Option

	// LookupEnv reads the environment. Nil: os.LookupEnv. Tests and
	// multi-tenant programs can pass their own.
	LookupEnv func(key string) (string, bool)
}

// Environment variables read by Config when a field is zero.
const (
	EnvEndpoint       = "LAKEBASE_ENDPOINT"
	EnvInstance       = "LAKEBASE_INSTANCE"
	EnvHost           = "PGHOST"
	EnvPort           = "PGPORT"
	EnvDatabase       = "PGDATABASE"
	EnvUser           = "PGUSER"
	EnvClientID       = "DATABRICKS_CLIENT_ID"
	EnvSSLMode        = "PGSSLMODE"
	EnvSSLRootCert    = "PGSSLROOTCERT"
	EnvAppName        = "PGAPPNAME"
	EnvConnectTimeout = "PGCONNECT_TIMEOUT"
)

// resolved is a Config after environment fallbacks and validation, before
// anything is looked up over the network.
type resolved struct {
	Config
	hostFromEnv bool
	rootPEM     []byte // the CA file's contents, read once
	env         func(string) (string, bool)
	pgx         *pgx.ConnConfig // built once by resolve; build sets a looked-up host and user
	pgxHost     string          // the Host and User pgx parsed (before any look-up)
	pgxUser     string
	dsn         string // the settings pgx parsed (placeholder password)
}

// Validate checks every setting of cfg that can be checked without the
// network, exactly as New does before any look-up: the environment
// fallbacks, the endpoint or instance name, port, TTL, sslmode and the root
// certificate file (readable, PEM). It returns the same *ConfigError New
// would. It makes no network call and reads no file but SSLRootCert.
func (cfg Config) Validate() error {
	_, err := resolve(cfg)
	return err
}

// resolve is the first stage of New: environment fallbacks and every check
// that needs no network.
func resolve(cfg Config) (resolved, error) {
	r, err := withEnv(cfg)
	if err != nil {
		return r, err
	}
	c := &r.Config
	// The TLS settings are checked now, with a stand-in host when the real
	// one is still to be looked up; the CA file is read once.
	if _, err := sslmode.Parse(c.SSLMode); err != nil {
		return r, sslConfigError(err)
	}
	if c.SSLRootCert != "" && c.SSLRootCert != "system" {
		pem, err := os.ReadFile(c.SSLRootCert)
		if err != nil {
			return r, &ConfigError{Setting: "SSLRootCert (" + EnvSSLRootCert + ")", Problem: "cannot read the CA file", Fix: "point it at a readable PEM file of CA certificates, or leave it empty for the system roots", Err: err}
		}
		r.rootPEM = pem
		if _, err := sslmode.Configure(sslmode.Options{Mode: "verify-full", Host: "localhost", RootCertPEM: pem, Logger: discard}); err != nil {
			return r, sslConfigError(err)
		}
	}
	if strings.Contains(strings.ToLower(c.Host), "-pooler") && c.Password == "" {
		return r, poolerError(c.Host)
	}
	pc, dsn, err := pgxConfig(&r)
	if err != nil {
		return r, err
	}
	r.pgx, r.dsn, r.pgxHost, r.pgxUser = pc, dsn, c.Host, c.User
	return r, nil
}

// poolerError says that a token login was configured against a connection
// pooler host.
func poolerError(host string) *ConfigError {
	return &ConfigError{Setting: "Host (" + EnvHost + ")", Problem: "\"" + host + "\" is the endpoint's connection pooler, which accepts only native Postgres password roles, not OAuth token logins",
		Fix: "use the endpoint's direct host (without -pooler), or set Config.Password for a native password role"}
}

// sslConfigError turns an *sslmode.Error into a *ConfigError with one fix.
func sslConfigError(err error) *ConfigError {
	var se *sslmode.Error
	if !errors.As(err, &se) {
		return &ConfigError{Setting: "SSLMode/SSLRootCert (" + EnvSSLMode + "/" + EnvSSLRootCert + ")", Problem: "invalid TLS settings", Err: err}
	}
	setting := "SSLMode (" + EnvSSLMode + ")"
	switch {
	case strings.HasPrefix(se.Setting, "sslrootcert"):
		setting = "SSLRootCert (" + EnvSSLRootCert + ")"
	case se.Setting == "host":
		setting = "Host (" + EnvHost + ")"
	}
	var parts []string
	if se.Value != "" {
		parts = append(parts, strconv.Quote(se.Value))
	}
	if se.Err != nil {
		parts = append(parts, se.Err.Error())
	}
	ce := &ConfigError{Setting: setting, Problem: se.Problem, Fix: se.Fix, Err: se, detail: strings.Join(parts, ": "), hideErr: true}
	return ce
}

var discard = slog.New(slog.DiscardHandler)

func validEndpointName(s string) bool {
	parts := strings.Split(s, "/")
	if len(parts) != 6 || parts[0] != "projects" || parts[2] != "branches" || parts[4] != "endpoints" {
		return false
	}
	for _, p := range []string{parts[1], parts[3], parts[5]} {
		if p == "" || strings.ContainsAny(p, " \t\r\n?#") {
			return false
		}
	}
	return true
}

// Format implements fmt.Formatter so that every verb (%v, %+v, %#v, %s,
// %q) prints String.
func (c Config) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(c.String())) }
