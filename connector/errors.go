package connector

import (
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
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

// LoginReason says why Postgres refused a login.
type LoginReason int

// The reasons a login is refused.
const (
	// LoginRefused: a refusal this package could not classify further.
	LoginRefused LoginReason = iota
	// LoginCredentialRefused: the token was refused (SQLSTATE 28P01, or
	// 28000 "... authentication failed ...") even after one forced refresh.
	// The identity that mints the tokens cannot log in as the role.
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
// help: the connector has already done the one token refresh that could.
type LoginError struct {
	Role     string      // the Postgres role that was refused
	Database string      // the database it tried to log in to
	Host     string      // the server host
	Code     string      // the SQLSTATE, e.g. 28P01, 28000, 42501, 3D000
	Reason   LoginReason // why, as far as the server's answer tells
	Err      error       // the driver error (it never contains the password)
}

// Error implements error.
func (e *LoginError) Error() string {
	role, db := safeQuote(e.Role), safeQuote(e.Database)
	var what, fix string
	switch e.Reason {
	case LoginRoleMissing:
		what = "role " + role + " does not exist"
		fix = "create it as the project owner with `SELECT databricks_create_role(" + sqlLiteral(e.Role) +
			", 'USER')` ('SERVICE_PRINCIPAL' for an application id) or `databricks postgres create-role`, then grant it CONNECT on " + db
	case LoginCredentialRefused:
		what = "the credential for role " + role + " was refused, also after a forced token refresh"
		fix = "make sure the workspace identity that mints tokens is the one named by User/PGUSER, and that the role is an OAuth role created with databricks_create_role"
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

// Unwrap returns the driver error.
func (e *LoginError) Unwrap() error { return e.Err }

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

// refusal classifies a failed login. ok is false when err is not a refusal
// by the server (a network error, a timeout, a TLS failure).
func refusal(err error) (code string, reason LoginReason, ok bool) {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return "", 0, false
	}
	msg := strings.ToLower(unquoted(pgErr.Message))
	switch pgErr.Code {
	case "28P01":
		return pgErr.Code, LoginCredentialRefused, true
	case "28000":
		switch {
		case strings.Contains(msg, "role") && strings.Contains(msg, "does not exist"):
			return pgErr.Code, LoginRoleMissing, true
		case strings.Contains(msg, "pg_hba.conf"), strings.Contains(msg, "no encryption"):
			return pgErr.Code, LoginNotAllowed, true
		case strings.Contains(msg, "authentication failed"), strings.Contains(msg, "password"),
			strings.Contains(msg, "token"), strings.Contains(msg, "expired"):
			return pgErr.Code, LoginCredentialRefused, true
		}
		return pgErr.Code, LoginRefused, true
	case "42501":
		return pgErr.Code, LoginNoPermission, true
	case "3D000":
		return pgErr.Code, LoginDatabaseMissing, true
	case "08P01":
		// PgBouncer reports failed authentication as a protocol violation.
		if strings.Contains(msg, "auth") || strings.Contains(msg, "password") {
			return pgErr.Code, LoginPoolerRefused, true
		}
	}
	return "", 0, false
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
