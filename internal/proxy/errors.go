package proxy

import (
	"context"
	"errors"
	"regexp"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/lakebase-go/lakebase/connector"
	"github.com/lakebase-go/lakebase/tokensource"
)

// loginErrorResponse turns a failed backend login into the ErrorResponse
// the client receives: the server's SQLSTATE where there is one, the
// connector's explanation as the message and its fix as the hint. It never
// contains a token: the connector's errors do not, and the text is
// scrubbed again.
func loginErrorResponse(err error, database string) *pgproto3.ErrorResponse {
	code := "08001" // sqlclient_unable_to_establish_sqlconnection
	var (
		le *connector.LoginError
		we *connector.WakeError
		ce *connector.ConfigError
		te *tokensource.Error
		pe *pgconn.PgError
	)
	switch {
	case errors.As(err, &le):
		code = le.Code
		if database != "" && (le.Reason == connector.LoginDatabaseMissing || le.Reason == connector.LoginNoPermission) {
			// The connector names its own database; the client asked for this one.
			cp := *le
			cp.Database = database
			err = &cp
		}
	case errors.As(err, &we):
		code = "57P03" // cannot_connect_now: the endpoint did not wake in time
	case errors.As(err, &te) && te.Kind == tokensource.KindAuth, errors.As(err, &ce) && strings.Contains(ce.Setting, "credentials"):
		code = "28000"
	case errors.As(err, &pe) && len(pe.Code) == 5:
		code = pe.Code
	case errors.Is(err, tokensource.ErrClosed), errors.Is(err, context.Canceled):
		code = "57P01"
	}
	msg, hint := splitFix(err.Error())
	msg = "lakebase proxy: cannot log in to Lakebase: " + strings.TrimPrefix(scrub(msg), "connector: ")
	return fatal(code, msg, scrub(hint), "")
}

// splitFix separates the "(fix: ...)" the library's errors end with.
func splitFix(msg string) (string, string) {
	i := strings.LastIndex(msg, " (fix: ")
	if i < 0 || !strings.HasSuffix(msg, ")") {
		return msg, ""
	}
	return msg[:i], "fix: " + msg[i+len(" (fix: "):len(msg)-1]
}

// Token-shaped text: JWTs (Lakebase credentials are JWTs), Databricks
// personal access tokens, bearer headers and password= pairs.
// tokensource.Scrub also cuts long messages and redacts every long run of
// name characters (which long host names are); the connector's errors
// hold no token, so this narrower pass keeps their host names and fixes
// readable while still catching a credential that slipped in.
var secretPatterns = []*regexp.Regexp{
	regexp.MustCompile(`eyJ[A-Za-z0-9_\-]*\.?[A-Za-z0-9_\-]*\.?[A-Za-z0-9_\-]*`),
	regexp.MustCompile(`dapi[A-Za-z0-9\-]{8,}`),
	regexp.MustCompile(`(?i)\b(bearer\s+|(?:access_token|token|password|secret)=)[^\s,;"'&]+`),
}

// scrub removes anything token-shaped from a message.
func scrub(s string) string {
	for _, re := range secretPatterns {
		s = re.ReplaceAllString(s, "[REDACTED]")
	}
	return s
}
