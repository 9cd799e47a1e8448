package peruser

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
)

// The headers Databricks Apps set on every proxied request.
const (
	HeaderEmail       = "X-Forwarded-Email"
	HeaderAccessToken = "X-Forwarded-Access-Token"
	HeaderUser        = "X-Forwarded-User"
)

// Limits on header values.
const (
	MaxEmailLen  = 320
	MaxTokenLen  = 8 << 10
	MaxUserIDLen = 256
)

// Identity is an end user as the Databricks Apps proxy describes them.
// Formatting (any fmt verb), logging (log/slog) or encoding (encoding/json)
// an Identity never prints AccessToken.
type Identity struct {
	Email       string // the Postgres role
	AccessToken string // the user's OAuth token (secret)
	UserID      string // for logs and telemetry; optional
}

// String describes the identity without the token.
func (i Identity) String() string { return "Identity{" + i.Email + ", user " + i.UserID + "}" }

// GoString is String, for %#v.
func (i Identity) GoString() string { return i.String() }

// LogValue implements slog.LogValuer without the token.
func (i Identity) LogValue() slog.Value {
	return slog.GroupValue(slog.String("email", i.Email), slog.String("user_id", i.UserID))
}

// Format implements fmt.Formatter: every verb prints String.
func (i Identity) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(i.String())) }

// MarshalJSON encodes the identity without the token (only whether one is
// present).
func (i Identity) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Email          string `json:"email"`
		UserID         string `json:"user_id,omitempty"`
		HasAccessToken bool   `json:"has_access_token"`
	}{i.Email, i.UserID, i.AccessToken != ""})
}

// AuthError reports an identity header that is missing, malformed or not
// proven by the access token. It never contains the value of the token
// header.
type AuthError struct {
	Header  string // the header at fault
	Problem string // what is wrong with it
	// Status is the HTTP status: http.StatusUnauthorized (401) for a
	// missing or malformed header, http.StatusForbidden (403) for an
	// identity the access token does not prove. Zero means 401.
	Status int
}

// Error implements error.
func (e *AuthError) Error() string { return "peruser: " + e.Header + ": " + e.Problem }

// StatusCode returns e.Status, or 401 when it is zero.
func (e *AuthError) StatusCode() int {
	if e.Status == 0 {
		return http.StatusUnauthorized
	}
	return e.Status
}

// StatusCode maps an error of this package to an HTTP status, the same
// whichever VerifyMethod verified the token:
//
//   - 401 for a missing or malformed identity header (*AuthError);
//   - 403 for an access token that does not prove its email, or that the
//     workspace refuses (*AuthError);
//   - 503 for a transient failure: a workspace or credential call that
//     failed transiently (a *tokensource.Error for which
//     tokensource.IsTransient is true), an endpoint that did not wake up
//     in time (*connector.WakeError), a request deadline, too many
//     verifications in flight (ErrBusy);
//   - 500 otherwise, in particular for a real user whose login cannot
//     succeed until someone changes the database (a *connector.LoginError
//     naming the fix: role missing, no CONNECT, database missing) and for
//     configuration errors.
func StatusCode(err error) int {
	var ae *AuthError
	switch {
	case err == nil:
		return http.StatusOK
	case errors.As(err, &ae):
		return ae.StatusCode()
	case transient(err):
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

// IdentityFromRequest reads and validates the identity headers.
func IdentityFromRequest(r *http.Request) (Identity, error) {
	id := identityOf(r)
	return id, id.Validate()
}

// identityOf reads the identity headers without validating them.
func identityOf(r *http.Request) Identity {
	return Identity{
		Email:       strings.TrimSpace(r.Header.Get(HeaderEmail)),
		AccessToken: strings.TrimSpace(r.Header.Get(HeaderAccessToken)),
		UserID:      strings.TrimSpace(r.Header.Get(HeaderUser)),
	}
}

// Validate checks that the email and token are present and well formed.
func (i Identity) Validate() error {
	if err := i.validateShape(); err != nil {
		return err
	}
	if !validToken(i.AccessToken) {
		return &AuthError{Header: HeaderAccessToken, Problem: "contains characters a token cannot contain"}
	}
	return nil
}

// validateShape is Validate without the scan of the token's characters:
// the hot path checks a token by its hash, and only a token that passed
// the scan can have been verified; an unknown token is scanned before it
// is verified.
func (i Identity) validateShape() error {
	switch {
	case i.Email == "":
		return &AuthError{Header: HeaderEmail, Problem: "missing or empty"}
	case len(i.Email) > MaxEmailLen:
		return &AuthError{Header: HeaderEmail, Problem: "too long"}
	case !validRole(i.Email):
		return &AuthError{Header: HeaderEmail, Problem: "not an email address or service principal id"}
	case i.AccessToken == "":
		return &AuthError{Header: HeaderAccessToken, Problem: "missing or empty"}
	case len(i.AccessToken) > MaxTokenLen:
		return &AuthError{Header: HeaderAccessToken, Problem: "too long"}
	case len(i.UserID) > MaxUserIDLen || !printable(i.UserID):
		return &AuthError{Header: HeaderUser, Problem: "too long or not printable"}
	}
	return nil
}

// validRole accepts emails and application ids: letters, digits and
// @ . _ + - only, with at most one @ not at either end.
func validRole(s string) bool {
	at := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '.', c == '_', c == '+', c == '-':
		case c == '@':
			at++
		default:
			return false
		}
	}
	return at <= 1 && s[0] != '@' && s[len(s)-1] != '@'
}

// validToken accepts visible ASCII without spaces (JWTs and opaque tokens).
func validToken(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] > '~' {
			return false
		}
	}
	return true
}

func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < ' ' || s[i] > '~' {
			return false
		}
	}
	return true
}
