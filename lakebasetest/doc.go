// Package lakebasetest is a local Databricks Lakebase for tests and demos:
// a throwaway PostgreSQL cluster whose logins are checked against tokens
// minted by a fake workspace API, reached through the real Databricks SDK.
//
//   - PostgreSQL: a cluster copied from a once-per-machine template in a
//     temporary directory, on a free loopback port, TLS with a freshly
//     generated CA (CAFile) and a certificate for localhost and 127.0.0.1,
//     hostssl-only by default. As root, the server runs as the "postgres"
//     OS user.
//   - Logins: every role but the emulator's admin authenticates with
//     PostgreSQL's "ldap" method (simple bind) against an in-process LDAP
//     responder that accepts a password only if it is an unexpired,
//     unrevoked token minted by this emulator for exactly that role —
//     several at once, like Lakebase. Tokens are JWT-shaped
//     (header.payload.signature, base64url, with sub/iat/exp claims) and
//     DefaultTokenSize (1024) bytes long unless WithTokenSize says
//     otherwise; the signature part starts with "lbt_" so tests can search
//     output for leaked tokens. A refused token login is PostgreSQL's
//     FATAL 28000 "LDAP authentication failed for user ..."; a valid token
//     for an identity without a role is FATAL 28000 "role ... does not
//     exist".
//   - Workspace API (httptest): the credential, endpoint, instance and
//     SCIM Me routes in Databricks' REST shapes and error JSON, with fault
//     knobs (FailNext, SetLatency, SetFault) and per-route counters. It also
//     serves the Databricks Apps login path: /.well-known/databricks-config
//     (with oidc_endpoint, so the SDK logs no host-metadata warning), OIDC
//     discovery and the OAuth token endpoint for the client-credentials
//     grant (OAuth M2M). The service principal's client id/secret
//     (ServicePrincipal, ServicePrincipalSecret) get a bearer that is the
//     service principal; a wrong secret gets 401 invalid_client.
//   - Doors: Port is PostgreSQL itself (direct, never suspended; Env uses
//     it). FrontDoorPort is the endpoint as clients of the service meet it:
//     a TCP forwarder that emulates scale to zero (Suspend, Resume,
//     SetWakeDelay, SetWakeMode, SetAutoSuspend, WakeUps,
//     RefusedWhileWaking); AppEnv uses it. PoolerHost/PoolerPort stand for
//     the "-pooler" host: it accepts the admin's native password and
//     refuses token logins with PgBouncer's FATAL 08P01 "SASL
//     authentication failed".
//   - A hot standby, opt in (WithStandby or StartStandby, a base backup of
//     about a second): streaming replication from a slot, the same token
//     checks, on 127.0.0.3 with the primary's port numbers, reported as
//     the endpoint's read_only_host; writes there fail with 25006;
//     PauseReplay/ResumeReplay/CatchUp make lag visible; Failover promotes
//     it and moves the primary's address to it.
//   - AppEnv is what a Databricks App is given (OAuth M2M credentials and
//     PG* variables, no PAT), plus PGSSLROOTCERT and LAKEBASE_ENDPOINT.
//   - RefusingWorkspaceURL and SilentWorkspaceURL give workspace URLs that
//     refuse connections or never answer, for startup-bound tests.
//
// What it does not emulate: real Databricks permissions and Unity Catalog
// grants (every role may use the database), databricks_auth and role
// creation through the API (use AddUser), the enforcement of token claims
// such as read-only tables, connection pooling itself (the pooler host only
// gates logins), the 72-hour connection lifetime and 24-hour idle timeout,
// and the workspace-scoped token binding beyond "this token, this role".
//
// Tests call Start(t); programs call New(ctx) and Close. Without PostgreSQL
// binaries, Start skips the test unless LAKEBASE_TEST_REQUIRE_PG=1. This
// package is for tests and examples only; library code never imports it.
package lakebasetest
