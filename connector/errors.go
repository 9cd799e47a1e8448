package connector

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/lakebase-go/lakebase/tokensource"
)

// ConfigError reports a setting that is missing, malformed or inconsistent,
// or a workspace that cannot be reached or used with the settings given.
// Retrying with the same configuration cannot help; the message names the
// setting and one fix.
type ConfigError struct {
	// Setting is the Config field and, where one exists, its environment
	// variable, e.g. "SSLMode (PGSSLMODE)" or "DATABRICKS_HOST".
	Setting string
	// Problem says what is wrong.
	Problem string
	// Fix says what to do about it.
	Fix string
	// Err is the underlying cause, if any (errors.Is/As reach it).
	Err error

	detail  string // shown instead of Err's text
	hideErr bool   // Err carries a fix of its own: show detail only
}

// Error implements error.
func (e *ConfigError) Error() string {
	msg := "connector: " + e.Setting + ": " + e.Problem
	switch {
	case e.detail != "":
		msg += ": " + e.detail
	case e.Err != nil && !e.hideErr:
		msg += ": " + e.Err.Error()
	}
	if e.Fix != "" {
		msg += " (fix: " + e.Fix + ")"
	}
	return msg
}

// Unwrap returns the underlying cause.
func (e *ConfigError) Unwrap() error { return e.Err }

// Transient reports false: retrying with the same configuration cannot
// help, whatever the cause (tokensource.IsTransient consults it, so an
// unreachable workspace reported by New is not transient).
func (e *ConfigError) Transient() bool { return false }

// GoString is Error, so %#v never prints the cause's fields.
func (e *ConfigError) GoString() string { return e.Error() }

// Format implements fmt.Formatter: every verb prints Error (fmt would print
// the fields for verbs such as %d).
func (e *ConfigError) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(e.Error())) }

// MarshalJSON encodes the message and the setting, never the cause's
// fields.
func (e *ConfigError) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Error   string `json:"error"`
		Setting string `json:"setting"`
		Problem string `json:"problem"`
		Fix     string `json:"fix,omitempty"`
	}{e.Error(), e.Setting, e.Problem, e.Fix})
}

// LoginReason says why Postgres refused a login.
type LoginReason int

// The reasons a login is refused.
const (
	// LoginRefused: a refusal this package could not classify further.
	LoginRefused LoginReason = iota
	// LoginCredentialRefused: the token was refused (SQLSTATE 28P01, or
	// 28000 "... authentication failed ..."), and so was the token of the
	// forced refresh (the identity that mints the tokens cannot log in as
	// the role), or the refresh failed (LoginError.Refresh says why; a
	// later connection retries it) or is deferred to the end of
	// Config.ForcedRefreshInterval (the message says when).
	LoginCredentialRefused
	// LoginPasswordRefused: the static Config.Password was refused.
	LoginPasswordRefused
	// LoginRoleMissing: the role does not exist in the database.
	LoginRoleMissing
	// LoginNotAllowed: the server's access rules (pg_hba.conf) have no entry
	// for this connection, typically because it is not encrypted or comes
	// from a host that is not allowed.
	LoginNotAllowed
	// LoginNoPermission: the role may not connect to the database
	// (SQLSTATE 42501).
	LoginNoPermission
	// LoginDatabaseMissing: the database does not exist (SQLSTATE 3D000).
	LoginDatabaseMissing
	// LoginPoolerRefused: a connection pooler (PgBouncer, Lakebase's
	// "-pooler" host) refused the authentication (SQLSTATE 08P01). The
	// pooler accepts only native Postgres password roles, not OAuth tokens.
	LoginPoolerRefused
)

// String names the reason.
func (r LoginReason) String() string {
	switch r {
	case LoginCredentialRefused:
		return "credential refused"
	case LoginPasswordRefused:
		return "password refused"
	case LoginRoleMissing:
		return "role missing"
	case LoginNotAllowed:
		return "not allowed by the server's access rules"
	case LoginNoPermission:
		return "no permission"
	case LoginDatabaseMissing:
		return "database missing"
	case LoginPoolerRefused:
		return "refused by a connection pooler"
	}
	return "refused"
}

// LoginError reports that Postgres refused a login. Reason says why and
// the message names one fix. Retrying with the same configuration does not
// help — the connector has already done the token refresh that could, or
// will do it on a later connection — except when that forced refresh itself
// failed transiently: then Refresh holds the failure and
// tokensource.IsTransient(err) reports true.
type LoginError struct {
	Role     string      // the Postgres role that was refused
	Database string      // the database it tried to log in to
	Host     string      // the server host
	Code     string      // the SQLSTATE, e.g. 28P01, 28000, 42501, 3D000
	Reason   LoginReason // why, as far as the server's answer tells
	Err      error       // the driver error (it never contains the password)
	// Refresh is why the token refresh this refusal forced did not produce
	// a usable token: the *tokensource.Error of a failed fetch (errors.As
	// reaches it), or the connection's context error. Nil when no forced
	// refresh failed.
	Refresh error

	note refreshNote // what the connector did about a refused credential
}

// noteKind says what the connector did about a refused credential.
type noteKind int

const (
	noteRefusedAgain noteKind = iota // refreshed, and the new token was refused too (or no refresh applied)
	noteFailed                       // the forced refresh failed; a later connection retries it
	noteDeferred                     // a refresh was forced less than ForcedRefreshInterval ago
	noteNoRefresher                  // the token source cannot be refreshed
	noteWaitEnded                    // the connection's context ended during the forced refresh
)

// refreshNote is what the message of a refused credential says about the
// token refresh.
type refreshNote struct {
	kind     noteKind
	wait     time.Duration // failed, deferred: until a connection may force the next refresh
	interval time.Duration // deferred: the ForcedRefreshInterval
}

// Error implements error.
func (e *LoginError) Error() string {
	role, db := safeQuote(e.Role), safeQuote(e.Database)
	pooler := e.Code == "08P01"
	var what, fix string
	switch e.Reason {
	case LoginRoleMissing:
		if pooler {
			what = "the connection pooler has no role " + role
			fix = "connect to the endpoint's direct host (Host/PGHOST without -pooler); the pooler knows only native Postgres password roles"
			break
		}
		what = "role " + role + " does not exist"
		fix = "create it as the project owner with `SELECT databricks_create_role(" + sqlLiteral(e.Role) +
			", 'USER')` ('SERVICE_PRINCIPAL' for an application id) or `databricks postgres create-role`, then grant it CONNECT on " + db
	case LoginCredentialRefused:
		what, fix = e.credentialMessage(role)
	case LoginPasswordRefused:
		what = "password refused for role " + role
		fix = "check Config.Password, the native Postgres password of this role"
	case LoginNotAllowed:
		what = "the server has no access rule for this connection as role " + role
		fix = "connect with TLS (leave SSLMode/PGSSLMODE at verify-full) to the endpoint's host; Lakebase refuses unencrypted connections"
	case LoginNoPermission:
		what = "role " + role + " may not connect to database " + db
		fix = "GRANT CONNECT ON DATABASE " + db + " TO " + role + " as the database owner"
	case LoginDatabaseMissing:
		if pooler {
			what = "the connection pooler has no database " + db
			fix = "check Database/PGDATABASE against the databases the pooler serves, or connect to the endpoint's direct host"
			break
		}
		what = "database " + db + " does not exist"
		fix = "check Database/PGDATABASE (the default database is databricks_postgres)"
	case LoginPoolerRefused:
		what = "the connection pooler refused the login of role " + role + "; it accepts only native Postgres password roles, not OAuth tokens"
		fix = "connect to the endpoint's direct host (Host/PGHOST without -pooler), or set Config.Password for a native password role"
	default:
		what = "login refused for role " + role
		fix = "see the server's message"
	}
	return fmt.Sprintf("connector: %s (SQLSTATE %s, host %s, database %s): %v (fix: %s)", what, e.Code, e.Host, db, e.Err, fix)
}

// credentialMessage says what happened to a refused credential and its
// token refresh.
func (e *LoginError) credentialMessage(role string) (what, fix string) {
	identity := "make sure the workspace identity that mints tokens is the one named by User/PGUSER, and that the role is an OAuth role created with databricks_create_role"
	switch e.note.kind {
	case noteFailed:
		return fmt.Sprintf("the credential for role %s was refused and the forced token refresh failed (a connection after %v retries it): %v",
				role, e.note.wait.Round(time.Millisecond), e.Refresh),
			"if the refresh keeps failing, check the workspace (DATABRICKS_HOST) and the identity's permission to mint credentials"
	case noteDeferred:
		return fmt.Sprintf("the credential for role %s was refused; a token refresh was forced less than ForcedRefreshInterval (%v) ago, so the next one is deferred: the first connection after %v forces it",
				role, e.note.interval, e.note.wait.Round(time.Millisecond)),
			"none if the token was revoked (the deferred refresh replaces it); if every new token is refused, " + identity
	case noteNoRefresher:
		return "the credential for role " + role + " was refused and the token source cannot be refreshed (it does not implement tokensource.Refresher)",
			"supply a Config.TokenSource whose tokens the server accepts for this role, or one that implements tokensource.Refresher"
	case noteWaitEnded:
		return fmt.Sprintf("the credential for role %s was refused and the connection's context ended during the forced token refresh: %v", role, e.Refresh),
			"allow the connection more time (ctx deadline, ConnectTimeout); the refresh carries on for later connections"
	}
	return "the credential for role " + role + " was refused, also after a forced token refresh", identity
}

// Unwrap returns the driver error and, if the forced refresh failed, its
// failure.
func (e *LoginError) Unwrap() []error {
	var errs []error
	for _, err := range []error{e.Err, e.Refresh} {
		if err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

// Transient reports whether a later attempt can succeed: only when the
// refresh forced by a refused credential failed transiently (the next
// connection retries it). tokensource.IsTransient consults it.
func (e *LoginError) Transient() bool {
	return e.Refresh != nil && tokensource.IsTransient(e.Refresh)
}

// GoString is Error, so %#v never prints the driver error's fields.
func (e *LoginError) GoString() string { return e.Error() }

// Format implements fmt.Formatter: every verb prints Error (fmt would print
// the fields for verbs such as %d).
func (e *LoginError) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(e.Error())) }

// MarshalJSON encodes the message and the classification, never the
// driver error's fields.
func (e *LoginError) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Error     string `json:"error"`
		Role      string `json:"role"`
		Database  string `json:"database"`
		Host      string `json:"host"`
		Code      string `json:"code"`
		Reason    string `json:"reason"`
		Transient bool   `json:"transient"`
	}{e.Error(), e.Role, e.Database, e.Host, e.Code, e.Reason.String(), e.Transient()})
}

// safeQuote quotes a name for a message: control characters and quotes
// escaped, overlong names cut.
func safeQuote(s string) string {
	if len(s) > 128 {
		s = s[:128] + "..."
	}
	return fmt.Sprintf("%q", s)
}

// sqlLiteral quotes s as a SQL string literal.
func sqlLiteral(s string) string {
	if len(s) > 128 {
		s = s[:128]
	}
	s = strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return -1
		}
		return r
	}, s)
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}

// failure is what a failed connection attempt means to the connector.
type failure int

const (
	failOther     failure = iota // neither of the others: returned (wrapped) at once
	failColdStart                // how a waking or restarting endpoint refuses: retried within ConnectTimeout
	failRefused                  // the server refused the login: a *LoginError
)

// classifyFailure classifies the error of one connection attempt. A refusal
// comes with its SQLSTATE and reason.
func classifyFailure(err error) (f failure, code string, reason LoginReason) {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		f, reason = classifyServerError(pgErr.Code, pgErr.Message)
		return f, pgErr.Code, reason
	}
	if tokensource.IsTransient(err) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) {
		// Dial errors: refused, reset, timed out, closed before the
		// startup finished. (IsTransient is false for a certificate that
		// cannot be verified and a host name that does not exist.)
		return failColdStart, "", 0
	}
	return failOther, "", 0
}

// classifyServerError classifies an error the server sent during a login
// by its SQLSTATE and, where the SQLSTATE is ambiguous (28000, 08P01), by
// its message (names in double quotes are ignored, so a name cannot fool
// the match).
func classifyServerError(code, message string) (failure, LoginReason) {
	msg := strings.ToLower(unquoted(message))
	switch code {
	case "28P01":
		return failRefused, LoginCredentialRefused
	case "28000":
		switch {
		case strings.Contains(msg, "role") && strings.Contains(msg, "does not exist"):
			return failRefused, LoginRoleMissing
		case strings.Contains(msg, "pg_hba.conf"), strings.Contains(msg, "no encryption"):
			return failRefused, LoginNotAllowed
		case strings.Contains(msg, "authentication failed"), strings.Contains(msg, "password"),
			strings.Contains(msg, "token"), strings.Contains(msg, "expired"):
			return failRefused, LoginCredentialRefused
		}
		return failRefused, LoginRefused
	case "42501":
		return failRefused, LoginNoPermission
	case "3D000":
		return failRefused, LoginDatabaseMissing
	case "57P03": // the database system is starting up / shutting down / in recovery
		return failColdStart, 0
	case "57P01", "57P02":
		// A server shutting down (or crashing) while the login was in
		// progress: a restart or a failover, which the next server
		// behind the host answers (readonly.go's failover tests).
		return failColdStart, 0
	case "08P01":
		// A protocol violation: how PgBouncer (Lakebase's pooler) reports
		// nearly everything. Only its "come back later" answers are a
		// cold start.
		switch {
		case strings.Contains(msg, "no such database"):
			return failRefused, LoginDatabaseMissing
		case strings.Contains(msg, "no such user"):
			return failRefused, LoginRoleMissing
		case strings.Contains(msg, "auth"), strings.Contains(msg, "password"):
			return failRefused, LoginPoolerRefused
		}
		for _, transient := range poolerTransient {
			if strings.Contains(msg, transient) {
				return failColdStart, 0
			}
		}
		return failRefused, LoginRefused
	}
	if len(code) == 5 && code[:2] == "08" { // connection exception
		return failColdStart, 0
	}
	return failOther, 0
}

// poolerTransient are the parts of PgBouncer's 08P01 messages that say the
// server behind it is not available yet ("server login has been failing,
// try again later", "pgbouncer cannot connect to server",
// "query_wait_timeout", "client_login_timeout (server down)", "no more
// connections allowed", "server conn crashed?").
var poolerTransient = []string{"try again", "cannot connect to server", "wait_timeout", "login_timeout", "server down", "no more connections", "crashed", "shutting down"}

// refusal classifies a failed login. ok is false when err is not a refusal
// by the server (a network error, a timeout, a TLS failure, a cold start).
func refusal(err error) (code string, reason LoginReason, ok bool) {
	f, code, reason := classifyFailure(err)
	return code, reason, f == failRefused
}

// coldStart reports whether err is how a compute that is waking up or
// restarting refuses a connection: a dial error (refused, reset, timeout,
// closed before the startup finished), SQLSTATE class 08 other than the
// pooler's refusals, 57P03, or 57P01/57P02 (a server that shut down during
// the login: a restart or a failover). Refusals of the login (28xxx, 42501, 3D000,
// most 08P01) and TLS certificate failures are not.
func coldStart(err error) bool {
	f, _, _ := classifyFailure(err)
	return f == failColdStart
}

// credentialRefused reports whether err is a refusal of the credential
// itself, the only refusal a new token can fix.
func credentialRefused(err error) bool {
	_, reason, ok := refusal(err)
	return ok && reason == LoginCredentialRefused
}

// unquoted drops the double-quoted parts of a server message (role,
// database and host names), so that matching its words cannot be fooled by
// a name.
func unquoted(msg string) string {
	var b strings.Builder
	in := false
	for _, r := range msg {
		if r == '"' {
			in = !in
			continue
		}
		if !in {
			b.WriteRune(r)
		}
	}
	return b.String()
}
