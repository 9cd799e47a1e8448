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
// X-Forwarded-Email (used as the Postgres role), X-Forwarded-Access-Token
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
//     the email with it: Lakebase binds a credential to the identity of the
//     token that minted it, so a token of another identity is refused. It
//     needs only the postgres scope the pool needs anyway.
//   - VerifyAuto (the default) uses Me and switches to the login proof for
//     good when the workspace refuses Me with 403.
//
// The pool logs in as the identity the token proved, as the workspace
// spells it (Me's userName; with the login proof, the email), so the case
// of the email header does not matter.
//
// A verified token is remembered by its SHA-256 (never the token itself)
// until its JWT exp claim (at most MaxVerifiedAge), else for VerifiedTTL,
// at most MaxVerifiedTokens of them. Concurrent requests with one new
// token share one verification, bounded by VerifyTimeout and by the
// requests' contexts. A token that does not prove the email is an
// *AuthError with status 403, logged at WARN with the email only; no pool is
// built or touched, so the real user's pool and stored token stay as they
// were. A request without both the email and the token (or with malformed
// values) is an *AuthError with status 401 and never reaches the service
// principal.
//
// What verification costs: the first request of each new token waits for
// one Me call (about a millisecond on a local emulator; one workspace round
// trip in production), or with the login proof for one mint and one login,
// whose credential then serves the user's pool. Later requests with the same
// token pay one SHA-256 and a map look-up.
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
// database, TLS settings, token options and workspace host, with the user's
// email as role and a token source that mints with the user's access token.
// Nothing is read from the environment again, and building a user's pool
// makes no network call: the only per-user calls are the user's
// verification and credential mints.
//
// # Resources
//
// One *sql.DB per role with at most MaxOpenConnsPerUser connections, with a
// lazy token source (no goroutine or timer per user) that keeps the user's
// latest verified access token, not a workspace client: one light
// workspace client verifies every user's token and mints every user's
// credentials, each request carrying its user's token, on one HTTP
// transport with bounded idle connections. A new access token is used for the user's
// next credential mint without rebuilding the pool, and clears a failure
// remembered for the old one. One build per email runs at a time; other
// requests of that user wait for it or for their context. One janitor timer
// closes pools that have been idle (no connection in use, no request
// holding them) for IdleTTL; beyond MaxUsers the least recently used idle
// pool is closed. A pool in use is never closed.
package peruser
