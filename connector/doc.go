// Package connector provides a database/sql [driver.Connector] for Databricks
// Lakebase that injects a current OAuth token as the Postgres password on
// every new physical connection.
//
// Lakebase checks the password only when a connection logs in, and its OAuth
// tokens live for at most an hour. A plain pool that was given a token once
// breaks at the first new connection after that token expires. A [Connector]
// owns a cached, self-refreshing [tokensource.Cached] and copies the base pgx
// configuration for every new connection, setting only the password on the
// copy. Queries on open connections never touch the token path.
//
//	c, err := connector.New(ctx, connector.Config{Endpoint: "projects/p/branches/b/endpoints/e"})
//	if err != nil { ... }
//	db := connector.OpenDB(c) // or sql.OpenDB(c)
//	defer db.Close()          // also stops the token refresh
//
// Zero fields of [Config] fall back to the environment variables a Databricks
// App receives (LAKEBASE_ENDPOINT, PGHOST, PGUSER, PGSSLMODE, ...); see [Config].
//
// # Startup
//
// [New] works in three stages, each once: every local setting is resolved and
// validated without the network ([Config.Validate] runs this stage alone);
// then only what is missing — the host (from Endpoint or Instance) and the
// user (the workspace identity) — is looked up; then the connector is built.
// With Host and User known, New makes no network call. New returns within
// its ctx whatever the workspace does: an unreachable, refusing, silent or
// non-existent DATABRICKS_HOST is a [*ConfigError] naming DATABRICKS_HOST.
//
// # Login policy
//
// A refusal of the credential itself (SQLSTATE 28P01, or 28000 "...
// authentication failed ...") on a login that used a cached token marks that
// token refused and forces one token refresh, then retries once. At most one
// refresh is forced per refused token (concurrent refused logins share it)
// and one per [Config.ForcedRefreshInterval] (30 s) per connector. A refused
// token is never used for a login again. There are no dead ends: a refusal
// inside the interval is deferred (the first connection after it forces the
// refresh), and a forced refresh that fails is retried by a later connection
// (after 1 s, doubling up to the interval), in both refresh modes and on the
// pgxpool path. Refusals a new token cannot fix — a missing role, no pg_hba
// entry or no encryption, a static password, a connection pooler — never
// mint. Every refusal is a [*LoginError] whose [LoginReason] says which, with
// one fix; after a failed forced refresh its Refresh field holds the failure.
// pgxpool has no hook that sees a failed login: there the refused login
// fails with pgx's own error (SQLSTATE 28xxx), and the next connection's
// [Connector.PoolBeforeConnect] replaces the token or fails with a
// [*LoginError] without logging in with it again, so a revoked token costs
// one failed connection.
//
// # Retrying
//
// [tokensource.IsTransient] is the one answer to "does retrying help?": yes
// for a [*WakeError], a transient fetch failure and a [*LoginError] whose
// forced refresh failed transiently; no for a [*ConfigError] and every other
// refusal.
//
// # Cold starts
//
// A scaled-to-zero endpoint wakes on the next connection attempt. A new
// physical connection therefore retries dial errors (refused, reset,
// timeout), SQLSTATE class 08 and 57P03 (and 57P01/57P02 during the login:
// a server shutting down for a restart or failover) with jittered backoff (25–50 ms for
// the first second, then doubling to 1 s) until [Config.ConnectTimeout] (60
// s by default: wakes usually take a few hundred milliseconds but can take
// much longer, and the Databricks CLI allows 120 s) runs out, without a new
// credential call, logging one INFO line "endpoint waking up, retrying" per
// connection. It never retries 28xxx, 42501, 3D000 or a pooler's 08P01
// refusals ("no such database", "no such user" are a [*LoginError]): an
// 08P01 is a cold start only when PgBouncer says to come back later ("try
// again later", query_wait_timeout, ...). When the time runs out the error is a
// [*WakeError] naming the host and wrapping the context error. The pgxpool
// path ([Connector.PoolConfig], [Connector.PoolBeforeConnect]) retries the same
// way inside the connection's DialFunc, replaying the startup message on a
// new transport.
//
// # The pooler host
//
// Lakebase's built-in pooler (the "-pooler" host, PgBouncer in transaction
// mode) accepts only native Postgres password roles. A token login
// configured against a host whose name contains "-pooler" fails at [New]
// with a [*ConfigError] naming Host (PGHOST); a pooler that refuses a token
// login anyway is a [*LoginError] with [LoginPoolerRefused], never retried.
// Use the direct host, or [Config.Password] for a native role (with
// [Config.QueryExecMode] set to simple protocol or exec behind it).
//
// # Read replicas
//
// [Config.ReadOnly] (or PGTARGETSESSIONATTRS=read-only) connects to the
// endpoint's read-only host (readable secondaries, or a read replica's
// endpoint) and fails [New] with a [*ConfigError] when there is none,
// never falling back to the primary; each new connection checks that its
// session is read-only. [Connector.Reader] derives such a reader from a
// writer with the same workspace client and token cache. A write there
// fails with pgx's *pgconn.PgError, SQLSTATE 25006; reads lag writes.
//
// # pgx hooks and raw access
//
// [Config.BeforeConnect] edits each connection's pgx configuration (Tracer,
// DialFunc, OnNotice; it never sees the token) and [Config.AfterConnect]
// runs on each new connection (register types). Both apply to [OpenDB], the
// lakebase driver and [Connector.PoolConfig]. [WithPgxConn] hands out the
// *pgx.Conn under a database/sql connection (CopyFrom, LISTEN) with or
// without telemetry.
//
// # Telemetry
//
// With [Config.Telemetry] connections are wrapped by otelsql with lean
// defaults: spans for queries, execs, transactions and connects, and the
// db.client.operation.duration metric; no spans for Rows iteration, session
// resets, prepares or pings. [OpenDB] also registers the pool's sql.DBStats
// gauges and unregisters them when the DB is closed. [Config.TelemetryOptions]
// adds or overrides otelsql options (for example
// otelsql.WithSpanOptions(otelsql.SpanOptions{Ping: true})). Spans and
// metrics go to [Config.TracerProvider] and [Config.MeterProvider], else the
// OpenTelemetry globals; the token source's fetch spans and metrics are
// emitted with or without Telemetry (see package tokensource). The pgxpool path ([Connector.PoolConfig]) gets token
// rotation, the refused-login recovery, the cold-start retries, the hooks
// and the pool defaults but not otelsql telemetry: set a pgx Tracer (for
// example otelpgx) through Config.BeforeConnect.
//
// No error, log line or span produced by this package contains a token or
// password; fetch errors are scrubbed (see [tokensource.Scrub]), and
// neither [Config], [*Connector] nor an error type prints a secret under any
// fmt verb, slog or encoding/json.
//
// pgx-native users get the same rotation through [Connector.PoolBeforeConnect]
// or [Connector.PoolConfig].
//
// Defaults: in every Config field and pool option, zero means the
// documented default (the Default* constants) and a negative duration or
// count means off, or is a *ConfigError where off makes no sense
// (ConnectTimeout, Port).
//
// Stability: this module is at v0.1.0, before 1.0. [New], [OpenDB], [Config]
// and the error types are meant to stay; option and field names and error
// reasons may still change in a minor version, and every change is listed
// in the repository's CHANGELOG.md.
package connector
