package connector

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/databricks/databricks-sdk-go/apierr"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/lakebase-go/lakebase/tokensource"
)

// TestClassifyServerErrors: SQLSTATE × message → what the connector does,
// with no emulator. Names in double quotes never decide.
func TestClassifyServerErrors(t *testing.T) {
	for _, tc := range []struct {
		code, msg string
		want      failure
		reason    LoginReason
	}{
		{"28P01", `password authentication failed for user "alice"`, failRefused, LoginCredentialRefused},
		{"28000", `LDAP authentication failed for user "alice"`, failRefused, LoginCredentialRefused},
		{"28000", `PAM authentication failed for user "alice"`, failRefused, LoginCredentialRefused},
		{"28000", `role "ghost" does not exist`, failRefused, LoginRoleMissing},
		{"28000", `no pg_hba.conf entry for host "10.0.0.1", user "alice", database "db", no encryption`, failRefused, LoginNotAllowed},
		{"28000", `role "password expired" is not permitted to log in`, failRefused, LoginRefused}, // the name does not decide
		{"42501", `permission denied for database "db"`, failRefused, LoginNoPermission},
		{"3D000", `database "nope" does not exist`, failRefused, LoginDatabaseMissing},
		{"57P03", "the database system is starting up", failColdStart, 0},
		{"57P03", "the database system is shutting down", failColdStart, 0},
		{"57P01", "terminating connection due to administrator command", failColdStart, 0},
		{"57P02", "terminating connection because of crash of another server process", failColdStart, 0},
		{"08006", "pooler: server connection failed", failColdStart, 0},
		{"08001", "could not connect to server", failColdStart, 0},
		// PgBouncer answers almost everything with 08P01.
		{"08P01", "SASL authentication failed", failRefused, LoginPoolerRefused},
		{"08P01", "password authentication failed", failRefused, LoginPoolerRefused},
		{"08P01", "no such database: analytics", failRefused, LoginDatabaseMissing},
		{"08P01", "no such database: authdb", failRefused, LoginDatabaseMissing}, // "auth" in the name does not decide
		{"08P01", "no such user: alice@example.com", failRefused, LoginRoleMissing},
		{"08P01", "server login has been failing, try again later (server_login_retry)", failColdStart, 0},
		{"08P01", "pgbouncer cannot connect to server", failColdStart, 0},
		{"08P01", "query_wait_timeout", failColdStart, 0},
		{"08P01", "client_login_timeout (server down)", failColdStart, 0},
		{"08P01", "no more connections allowed (max_client_conn)", failColdStart, 0},
		{"08P01", "unsupported startup parameter: search_path", failRefused, LoginRefused},
		{"08P01", "invalid startup packet layout", failRefused, LoginRefused},
		{"53300", "sorry, too many clients already", failOther, 0},
		{"42P01", `relation "t" does not exist`, failOther, 0},
	} {
		f, reason := classifyServerError(tc.code, tc.msg)
		if f != tc.want || reason != tc.reason {
			t.Errorf("%s %q: got class %d reason %v, want class %d reason %v", tc.code, tc.msg, f, reason, tc.want, tc.reason)
		}
		// The same through a pgconn error chain, as pgx returns it.
		err := fmt.Errorf("failed to connect: %w", &pgconn.PgError{Severity: "FATAL", Code: tc.code, Message: tc.msg})
		if f2, code, r2 := classifyFailure(err); f2 != tc.want || r2 != tc.reason || code != tc.code {
			t.Errorf("%s %q wrapped: got class %d reason %v code %s", tc.code, tc.msg, f2, r2, code)
		}
	}
}

// TestClassifyTransportErrors: dial errors are a cold start; a certificate
// that cannot be verified and a host name that does not exist are not.
func TestClassifyTransportErrors(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want failure
	}{
		{&net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}, failColdStart},
		{fmt.Errorf("tls error: %w", io.EOF), failColdStart},
		{fmt.Errorf("read: %w", syscall.ECONNRESET), failColdStart},
		{context.DeadlineExceeded, failColdStart},
		{&net.DNSError{Err: "no such host", Name: "nope.invalid", IsNotFound: true}, failOther},
		{fmt.Errorf("tls error: %w", &tokensource.CertificateError{Reason: "signed by an unknown authority"}), failOther},
		{context.Canceled, failOther},
		{errors.New("something else"), failOther},
	} {
		if f, _, _ := classifyFailure(tc.err); f != tc.want {
			t.Errorf("%v: class %d, want %d", tc.err, f, tc.want)
		}
	}
}

// TestOneRetryAnswer: tokensource.IsTransient says yes exactly where the
// README's error table says "retry helps": WakeError, transient fetch
// failures, a LoginError whose forced refresh failed transiently; no for
// configuration errors (even when the cause is a network error) and other
// refused logins.
func TestOneRetryAnswer(t *testing.T) {
	netErr := &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
	fetch5xx := &tokensource.Error{Op: "fetch", Kind: tokensource.KindTransient, Err: &apierr.APIError{StatusCode: 500, ErrorCode: "INTERNAL_ERROR"}}
	fetch403 := &tokensource.Error{Op: "fetch", Kind: tokensource.KindAuth, Err: &apierr.APIError{StatusCode: 403, ErrorCode: "PERMISSION_DENIED"}}
	refused := &pgconn.PgError{Code: "28000", Message: "LDAP authentication failed"}
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"WakeError", &WakeError{Host: "h", Attempts: 3, Err: netErr, Ctx: context.DeadlineExceeded}, true},
		{"wrapped WakeError", fmt.Errorf("failed to connect: dial error: %w", &WakeError{Host: "h", Err: &pgconn.PgError{Code: "57P03"}}), true},
		{"transient fetch failure", fmt.Errorf("connector: no token: %w", fetch5xx), true},
		{"LoginError, refresh failed with 500", &LoginError{Code: "28000", Reason: LoginCredentialRefused, Err: refused, Refresh: fetch5xx, note: refreshNote{kind: noteFailed}}, true},
		{"LoginError, refresh failed with 403", &LoginError{Code: "28000", Reason: LoginCredentialRefused, Err: refused, Refresh: fetch403, note: refreshNote{kind: noteFailed}}, false},
		{"LoginError, refused again", &LoginError{Code: "28000", Reason: LoginCredentialRefused, Err: refused}, false},
		{"LoginError, role missing", &LoginError{Code: "28000", Reason: LoginRoleMissing, Err: &pgconn.PgError{Code: "28000"}}, false},
		{"ConfigError over a network error", &ConfigError{Setting: EnvDatabricksHost, Problem: "cannot be reached", Err: netErr}, false},
		{"ConfigError over a transient fetch", &ConfigError{Setting: "x", Err: fetch5xx}, false},
		{"fetch 403", fetch403, false},
		{"closed", fmt.Errorf("connector: %w", tokensource.ErrClosed), false},
	} {
		if got := tokensource.IsTransient(tc.err); got != tc.want {
			t.Errorf("%s: IsTransient = %v, want %v (%v)", tc.name, got, tc.want, tc.err)
		}
	}
	// The LoginError reaches the refresh failure and the driver error.
	le := &LoginError{Role: "r", Code: "28000", Reason: LoginCredentialRefused, Err: refused, Refresh: fetch5xx, note: refreshNote{kind: noteFailed, wait: time.Second}}
	var te *tokensource.Error
	var pgErr *pgconn.PgError
	if !errors.As(le, &te) || !errors.As(le, &pgErr) || !strings.Contains(le.Error(), "refresh failed") {
		t.Errorf("LoginError chain or text: %v", le)
	}
}

// TestLoginErrorMessages: the pooler's refusals name the database or the
// role, and each refresh outcome has its own text.
func TestLoginErrorMessages(t *testing.T) {
	for _, tc := range []struct {
		le   *LoginError
		want []string
	}{
		{&LoginError{Role: "alice", Database: "analytics", Code: "08P01", Reason: LoginDatabaseMissing, Err: errors.New("no such database: analytics")}, []string{`pooler has no database "analytics"`}},
		{&LoginError{Role: "alice", Database: "db", Code: "08P01", Reason: LoginRoleMissing, Err: errors.New("no such user: alice")}, []string{`pooler has no role "alice"`, "direct host"}},
		{&LoginError{Role: "alice", Code: "28000", Reason: LoginCredentialRefused, Err: errors.New("x")}, []string{"also after a forced token refresh"}},
		{&LoginError{Role: "alice", Code: "28000", Reason: LoginCredentialRefused, Err: errors.New("x"), note: refreshNote{kind: noteDeferred, wait: 1500 * time.Millisecond, interval: 30 * time.Second}}, []string{"deferred", "ForcedRefreshInterval (30s)", "after 1.5s"}},
		{&LoginError{Role: "alice", Code: "28000", Reason: LoginCredentialRefused, Err: errors.New("x"), Refresh: errors.New("HTTP 500"), note: refreshNote{kind: noteFailed, wait: time.Second}}, []string{"refresh failed", "HTTP 500", "after 1s retries it"}},
		{&LoginError{Role: "alice", Code: "28000", Reason: LoginCredentialRefused, Err: errors.New("x"), note: refreshNote{kind: noteNoRefresher}}, []string{"cannot be refreshed", "tokensource.Refresher"}},
	} {
		msg := tc.le.Error()
		for _, w := range tc.want {
			if !strings.Contains(msg, w) {
				t.Errorf("%q lacks %q", msg, w)
			}
		}
	}
}
