// Package peruser gives each end user of a Databricks App their own small
// Lakebase pool, logged in as that user, so Postgres row-level security can
// use current_user.
//
//	m, err := peruser.New(ctx, peruser.Config{Base: connector.Config{}})
//	defer m.Close()
//	http.Handle("/todos", m.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
//		db, _, _ := peruser.DBFromContext(r.Context()) // runs as the user, held for the request
//		...
//	})))
//
// Outside a middleware, ForRequest (or Acquire) returns the pool with a
// release function; the pool is never closed before release is called.
//
// # Trust boundary
//
// Databricks Apps forward the user's identity in headers that the Apps
// proxy sets on every request it forwards:
// X-Forwarded-Email (the user; the Postgres role), X-Forwarded-Access-Token
// (the user's OAuth token) and X-Forwarded-User (an id, for logs only).
// Anything that can reach the app without that proxy — a second ingress, a
// sidecar, a caller inside the network, a local run — can set these headers
// itself, so the email header alone proves nothing.
//
// This package trusts the email only as far as the access token proves
// it: a pool is handed out only for a token verified to belong to the
// requested email. Each new token is verified once (see VerifyMethod):
//
//   - VerifyMe calls the workspace's Me API with the token and compares its
//     userName to the email, ignoring case. It needs the
//     iam.current-user:read user API scope.
//   - VerifyLogin mints a Lakebase credential with the token and logs in as
//     the email with it, through the new pool's own connector (the TLS
//     policy, Config.BeforeConnect/AfterConnect, cold-start retries and
//     refused-login handling of any pool connection): Lakebase binds a
//     credential to the identity of the token that minted it, so a token of
//     another identity is refused. It needs only the postgres scope the
//     pool needs anyway. The proof's credential and connection become the
//     user's pool: a new user costs one mint and one login.
//   - VerifyAuto (the default) uses Me; a token whose Me the workspace
//     refuses with 403 is proven by login, and once such a token has proved
//     its email, later tokens are proven by login without asking Me. A
//     refusal alone switches nothing, and the switch is never undone (an
//     app's scopes change only with a redeployment).
//
// One canonical identity per user: the workspace's spelling (Me's
// userName; with the login proof, the role's spelling in Postgres, found
// as the service principal in pg_roles when the header spells the email in
// another case). It keys the pools, the remembered tokens and the logs, so
// every spelling of an email gets the same pool.
//
// The same answer on every path: a token that does not prove the email is
// an *AuthError with status 403, logged at WARN with the email only; no
// pool is built or touched, so the real user's pool and stored token stay
// as they were. A real user whose login cannot succeed — role missing, no
// CONNECT, database missing — gets the *connector.LoginError naming the
// fix (status 500, never the spoof WARN), whichever method verified them:
// a user's first Acquire opens the pool's first connection. A transient
// failure (a credential call failing with 5xx, an endpoint that does not
// wake up in time) is a 503. A request without both the email and the
// token (or with malformed values) is an *AuthError with status 401 and
// never reaches the service principal. Middleware logs the cause of every
// 5xx and lets Config.ErrorHandler render the response.
//
// A verified token is remembered by its SHA-256 (never the token itself)
// until its JWT exp claim (at most MaxVerifiedAge), else for VerifiedTTL,
// at most MaxVerifiedTokens of them. Concurrent requests with one new
// token share one verification. Junk costs little: at most
// MaxVerifications verifications run at once (beyond it a new token gets
// a 503 wrapping ErrBusy, without a workspace call; Middleware logs such
// refusals in one line a second), and a failed
// verification is remembered by the token's SHA-256 for FailedTTL (a
// repeat is logged at DEBUG). Transient failures are never remembered.
//
// What verification costs: the first request of each new token waits for
// one Me call (about a millisecond on a local emulator; one workspace round
// trip in production), or with the login proof for one mint and one
// login, which then serve the user's first query. Later requests with the
// same token pay one SHA-256, a read lock and two map look-ups.
//
// What it does not do: verification proves that the token belongs to the
// email, not that the request came through the proxy. An attacker who holds
// a user's real token can act as that user — as they could against the
// workspace API directly.
//
// Local development: without the Apps proxy, either send the headers
// yourself with a real token of yours (for example from `databricks auth
// token`), or set Config.DevFallbackToServicePrincipal, which serves
// requests carrying neither identity header from the service principal's
// pool (it warns once and reports the auth mode as service-principal).
// Requests that carry identity headers are verified as always. Never enable
// the fallback in production.
//
// # Configuration
//
// Config.Base is resolved once by connector.New for the service principal
// (explicit fields, environment, profiles, host and user look-ups). Every
// user configuration is derived from that resolved configuration
// (connector.Connector.Config): the same endpoint or instance, host, port,
// database, TLS settings, hooks, token options and workspace host, with the
// user's canonical identity as role and a token source that mints with the
// user's access token. Nothing is read from the environment again, and
// building a user's pool makes no look-up: the only per-user calls are the
// user's verification, credential mints and logins.
//
// # Resources
//
// One *sql.DB per canonical identity with at most MaxOpenConnsPerUser
// connections (the first opened when the pool is built), with a lazy
// token source (no goroutine or timer per user) that keeps the user's
// latest verified access token, not a workspace client: one light
// workspace client verifies every user's token and mints every user's
// credentials, each request carrying its user's token, on one HTTP
// transport with bounded idle connections. A new access token is used for the user's
// next credential mint without rebuilding the pool, and clears a failure
// remembered for the old one. One janitor timer closes pools that have
// been idle (no connection in use, no request holding them) for IdleTTL;
// beyond MaxUsers the least recently used idle pool is closed. A pool in
// use is never closed.
//
// Defaults: a zero Config field means its documented default (the Default*
// constants); a negative one means off where the field says so
// (MaxVerifications, FailedTTL) and is a *connector.ConfigError from New
// otherwise.
package peruser
