// Package peruser gives each end user of a Databricks App their own small
// Lakebase pool, logged in as that user, so Postgres row-level security can
// use current_user.
//
// Databricks Apps forward the user's identity in three headers:
// X-Forwarded-Email (the Postgres role), X-Forwarded-Access-Token (the
// user's OAuth token, used here only to mint the user's Postgres
// credential) and X-Forwarded-User (an id, for logs).
//
//	m, err := peruser.New(ctx, peruser.Config{Base: connector.Config{}})
//	defer m.Close()
//	http.Handle("/todos", m.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
//		db, _, _ := peruser.DBFromContext(r.Context()) // runs as the user
//		...
//	})))
//
// Security: a request without both the email and the token is refused with
// an *AuthError (HTTP 401); it never falls back to the service principal
// unless Config.DevFallbackToServicePrincipal is set (for local development;
// it warns once and reports the auth mode as service-principal). Header
// values are validated before use. The access token never appears in a log
// line, error or span.
//
// Resources: one *sql.DB per role with a few connections, each with a lazy
// token source (no goroutine or timer per user). A changed access token is
// used for the user's next credential mint without rebuilding the pool. One
// janitor goroutine closes pools that have been idle (no connection in use,
// no request holding them) for IdleTTL; beyond MaxUsers the least recently
// used idle pool is closed. A pool in use is never closed.
package peruser
