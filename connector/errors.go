package connector

import (
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5/pgconn"
)

// ConfigError reports a setting that is missing, malformed or inconsistent.
// Retrying cannot help; the message names the setting and the fix.
type ConfigError struct {
	Setting string // the Config field and, where one exists, its environment variable
	Problem string // what is wrong
	Fix     string // what to do about it
	Err     error  // the underlying cause, if any
}

// Error implements error.
func (e *ConfigError) Error() string {
	msg := "connector: " + e.Setting + ": " + e.Problem
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	if e.Fix != "" {
		msg += " (fix: " + e.Fix + ")"
	}
	return msg
}

// Unwrap returns the underlying cause.
func (e *ConfigError) Unwrap() error { return e.Err }

// LoginError reports that Postgres refused the login of Role even with a
// freshly minted token: the role does not exist in Lakebase or lacks
// permission on the database. Retrying with the same configuration will not
// help.
type LoginError struct {
	Role     string // the Postgres role that was refused
	Database string // the database it tried to log in to
	Code     string // the SQLSTATE, 28P01 or 28000
	Err      error  // the driver error (it never contains the password)
}

// Error implements error.
func (e *LoginError) Error() string {
	return fmt.Sprintf("connector: Postgres refused login for role %q to database %q (SQLSTATE %s) even with a freshly minted token; "+
		"the role probably does not exist in Lakebase or has no permission: create it with "+
		"`SELECT databricks_create_role('%s', 'USER')` (or 'SERVICE_PRINCIPAL') as the project owner, or with "+
		"`databricks postgres create-role`, and grant it CONNECT on the database: %v",
		e.Role, e.Database, e.Code, e.Role, e.Err)
}

// Unwrap returns the driver error.
func (e *LoginError) Unwrap() error { return e.Err }

// authFailureCode returns the SQLSTATE if err is a Postgres authentication
// failure (28P01 invalid_password, 28000 invalid_authorization_specification).
func authFailureCode(err error) (string, bool) {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && (pgErr.Code == "28P01" || pgErr.Code == "28000") {
		return pgErr.Code, true
	}
	return "", false
}
