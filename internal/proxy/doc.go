// Package proxy is the local auth proxy behind `lakebase proxy`: it speaks
// the PostgreSQL protocol to local clients (psql, pg_dump, GUIs, migration
// tools) and logs each of them in to Lakebase through package connector,
// so they never handle a token.
//
// For each client connection a [Server]:
//
//   - reads the startup packets itself (exactly, never ahead): SSLRequest is
//     answered N, or S with [Config.TLS]; GSSENCRequest N; a CancelRequest
//     carrying a key this proxy issued is delivered to the right backend
//     session over a fresh connection encrypted like the session (unknown
//     keys are dropped silently); a protocol 3.x StartupMessage is accepted
//     (3.1+ and _pq_ options get NegotiateProtocolVersion, as from
//     PostgreSQL); anything malformed gets 08P01 or a close, and never a
//     backend login;
//   - checks the user: the proxy logs in as its own role, so a startup
//     naming another user is refused with FATAL 28000 naming that role
//     (an empty user is accepted; [Config.UserAny] accepts any name);
//   - with [Config.ClientPassword], runs SCRAM-SHA-256 with the client
//     (required for listening on anything but loopback);
//   - opens a new physical connection with [connector.Connector.Connect] —
//     the connector's whole login path: the current token, verify-full TLS,
//     cold-start retries, refused-login recovery — with the client's
//     database, application_name, options and other run-time parameters,
//     and takes the raw connection from pgx (pgconn.Hijack);
//   - sends the client AuthenticationOk, the server's ParameterStatus
//     messages, its own BackendKeyData and ReadyForQuery, then splices
//     bytes both ways until either side closes. A client that vanishes
//     without a Terminate message gets its running query cancelled before
//     the backend connection is closed.
//
// A failed backend login reaches the client as a FATAL ErrorResponse with
// the server's SQLSTATE (or 08001, 28000, 57P03) and the connector's
// explanation, with its fix as the hint. Nothing the proxy sends or logs
// contains a token or the client password.
//
// Clients over [Config.MaxConnections] get FATAL 53300. [Server.Run] ends
// with a graceful shutdown (listeners closed, sessions given
// [Config.ShutdownGrace]); [Config.HTTPAddress] serves /livez and /readyz
// with the counters of [Stats]. Logs: one line per session open and close.
package proxy
