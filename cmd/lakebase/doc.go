// Command lakebase connects tools that are not Go programs — psql,
// pg_dump, DBeaver, pgAdmin, DataGrip, migration CLIs (goose, Atlas,
// Flyway, dbmate), dbt, scripts — to Databricks Lakebase with current OAuth
// credentials, using this module's connector for every login.
//
// Install:
//
//	go install github.com/lakebase-go/lakebase/cmd/lakebase@latest
//
// Usage:
//
//	lakebase proxy  [flags]   a local PostgreSQL proxy that logs each client in with a current token
//	lakebase token  [--json]  print a current credential (PGPASSWORD=$(lakebase token) psql ...)
//	lakebase env    [--with-password]  print PGHOST/PGPORT/PGUSER/PGDATABASE/PGSSLMODE export lines
//	lakebase doctor           check every stage from settings to a query; the first failure's fix
//
// Every command resolves its settings exactly as connector.New does: the
// flags --endpoint, --instance, --host, --port, --database, --user and
// --profile, then LAKEBASE_ENDPOINT, LAKEBASE_INSTANCE, PGHOST, PGPORT,
// PGDATABASE, PGUSER (else DATABRICKS_CLIENT_ID, else the workspace
// identity), PGSSLMODE, PGSSLROOTCERT, PGCONNECT_TIMEOUT, and the Databricks
// SDK's unified authentication (DATABRICKS_HOST with DATABRICKS_TOKEN or
// DATABRICKS_CLIENT_ID/SECRET, DATABRICKS_CONFIG_PROFILE, ~/.databrickscfg)
// — what a Databricks App or a laptop after `databricks auth login` has.
// --token-early-refresh, --token-safety-margin and --token-ttl set the
// token cache's options (tokensource.Options).
//
// # lakebase proxy
//
// Listens on 127.0.0.1:5432 (--listen, repeatable; --unix-socket DIR adds
// DIR/.s.PGSQL.<port>). For each client it reads the startup itself
// (SSLRequest and GSSENCRequest are answered N, or S for SSL with
// --tls-self-signed or --tls-cert/--tls-key), checks the user (the proxy
// logs in as its own role: another user name gets FATAL 28000 naming that
// role; an empty one is accepted, and --user-any accepts any), logs in to
// Lakebase through the connector (current token, verify-full TLS,
// cold-start retries, refused-login recovery) with the client's database,
// application_name and options, relays the server's ParameterStatus
// messages, sends its own BackendKeyData and ReadyForQuery, and splices
// bytes until either side closes. Cancel requests are mapped to the right
// Lakebase session and sent over a new TLS connection; a client that
// vanishes mid-query has its query cancelled. A login Lakebase refuses
// reaches the client as FATAL with the SQLSTATE, the reason and the fix
// (never a token).
//
// Every local process that can reach the port can use the proxy's identity,
// as with a password in ~/.pgpass. Listening on any other address needs
// --allow-non-loopback and --client-password-file (clients then
// authenticate with SCRAM-SHA-256), and the proxy says so at start.
// Clients over --max-connections get FATAL 53300. SIGINT or SIGTERM stops
// accepting, lets sessions finish within --shutdown-grace, closes the rest
// and exits 0; a second signal closes at once. --http-address serves
// /livez and /readyz with connection counts. Logs go to stderr (--log-format
// text or json): one line per session open and close with the client
// address, database, duration and bytes, never a secret.
//
// # lakebase token, lakebase env
//
// token prints a current credential followed by a newline; --json prints
// {"token": ..., "expiry": RFC 3339, "role": ...}. env prints export lines
// for PGHOST, PGPORT, PGUSER, PGDATABASE, PGSSLMODE and PGSSLROOTCERT, and
// PGPASSWORD only with --with-password.
//
// # lakebase doctor
//
// Walks settings, workspace, workspace credentials, identity, host
// look-up, database credential, DNS, TCP (with wake-up), TLS, login and a
// query, printing each with its time; it stops at the first failure with
// the error and its fix, and exits 1.
//
// Exit status: 0 success, 1 failure, 2 a bad command line. Every command
// has --help.
package main
