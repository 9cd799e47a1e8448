package tokensource

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"syscall"

	"github.com/databricks/databricks-sdk-go/apierr"
)

// ErrClosed is the error of every Token or Refresh call on a closed source
// (test with errors.Is).
var ErrClosed = errors.New("tokensource: closed")

// Kind classifies a fetch failure by whether retrying can help.
type Kind int

// The kinds of fetch failure.
const (
	KindUnknown        Kind = iota // not classified; not retried
	KindTransient                  // network, timeout, 429, 5xx: retrying can help
	KindAuth                       // 401/403: the workspace identity cannot mint credentials
	KindNotFound                   // 404: the endpoint or instance does not exist
	KindInvalidRequest             // other 4xx
	KindConfig                     // a *ConfigError, a host name that does not exist, an untrusted certificate
	KindValidation                 // the response was unusable (a *ValidationError)
	KindClosed                     // the source was closed
)

// String names the kind.
func (k Kind) String() string {
	switch k {
	case KindTransient:
		return "transient"
	case KindAuth:
		return "auth"
	case KindNotFound:
		return "not found"
	case KindInvalidRequest:
		return "invalid request"
	case KindConfig:
		return "config"
	case KindValidation:
		return "validation"
	case KindClosed:
		return "closed"
	}
	return "unknown"
}

// Error is a failed token fetch. Its message never contains a token: the
// cause's text is passed through Scrub, and the errors of the Databricks
// fetchers of this package are scrubbed before they are wrapped.
type Error struct {
	Op   string // what failed, e.g. "fetch"
	Kind Kind   // whether and why retrying can help; see Transient
	Err  error  // the cause (scrubbed of secrets for this package's fetchers)
}

// Error implements error.
func (e *Error) Error() string {
	detail := e.Kind.String()
	var ae *apierr.APIError
	if errors.As(e.Err, &ae) {
		if ae.ErrorCode != "" {
			detail += ", " + ae.ErrorCode
		}
		if ae.StatusCode != 0 {
			detail += ", HTTP " + strconv.Itoa(ae.StatusCode)
		}
	}
	return "tokensource: " + e.Op + " failed (" + detail + "): " + Scrub(e.Err.Error())
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// Transient reports whether retrying later can help.
func (e *Error) Transient() bool { return e.Kind == KindTransient }

// GoString is Error, so %#v never prints the cause's fields (a FetchFunc's
// own error may hold a response body).
func (e *Error) GoString() string { return e.Error() }

// Format implements fmt.Formatter: every verb prints Error (fmt would print
// the fields for verbs such as %d).
func (e *Error) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(e.Error())) }

// MarshalJSON encodes the scrubbed message and the kind, never the cause's
// fields.
func (e *Error) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Error     string `json:"error"`
		Op        string `json:"op"`
		Kind      string `json:"kind"`
		Transient bool   `json:"transient"`
	}{e.Error(), e.Op, e.Kind.String(), e.Transient()})
}

// ValidationError reports an unusable credential response.
type ValidationError struct {
	Field  string // e.g. "token", "expire_time"
	Reason string // what is wrong with it
}

// Error implements error.
func (e *ValidationError) Error() string {
	return "tokensource: invalid credential response: " + e.Field + " " + e.Reason
}

// ConfigError reports a setting that makes fetching impossible.
type ConfigError struct {
	Setting string // the option or argument, e.g. "endpoint", "TTL"
	Problem string // what is wrong
	Fix     string // what to do about it
	Err     error  // the cause, if any (its text is shown; it holds no secret)
}

// Error implements error.
func (e *ConfigError) Error() string {
	msg := "tokensource: " + e.Setting + ": " + e.Problem
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	if e.Fix != "" {
		msg += " (fix: " + e.Fix + ")"
	}
	return msg
}

// Unwrap returns the cause.
func (e *ConfigError) Unwrap() error { return e.Err }

// GoString is Error, so %#v never prints the cause's fields.
func (e *ConfigError) GoString() string { return e.Error() }

// Format implements fmt.Formatter: every verb prints Error (fmt would print
// the cause's fields for verbs such as %d or %#v).
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

// CertificateError reports that the TLS certificate of a server could not
// be verified (an unknown authority, a wrong host name, an expired
// certificate). Retrying cannot help.
type CertificateError struct {
	Reason string // why verification failed, e.g. "signed by an unknown authority"
}

// Error implements error.
func (e *CertificateError) Error() string { return "tls: certificate not trusted: " + e.Reason }

// transienter is implemented by errors that know whether retrying can
// help: *Error here, and the error types of packages connector and driver.
type transienter interface{ Transient() bool }

// classify returns the kind of a raw fetch error. The outermost error in the
// chain that has a Transient method decides: a *Error gives its Kind, any
// other such error KindTransient or (when it says retrying cannot help, as
// a connector.ConfigError does) KindConfig. Otherwise the chain's contents
// decide.
func classify(err error) Kind {
	var tr transienter
	if errors.As(err, &tr) {
		if te, ok := tr.(*Error); ok {
			return te.Kind
		}
		if tr.Transient() {
			return KindTransient
		}
		return KindConfig
	}
	if errors.Is(err, ErrClosed) {
		return KindClosed
	}
	var ve *ValidationError
	if errors.As(err, &ve) {
		return KindValidation
	}
	var ce *ConfigError
	if errors.As(err, &ce) {
		return KindConfig
	}
	var ae *apierr.APIError
	if errors.As(err, &ae) {
		switch {
		case ae.StatusCode == 429 || ae.StatusCode >= 500:
			return KindTransient
		case ae.StatusCode == 401 || ae.StatusCode == 403:
			return KindAuth
		case ae.StatusCode == 404:
			return KindNotFound
		case ae.StatusCode >= 400:
			return KindInvalidRequest
		}
		switch ae.ErrorCode {
		case "TEMPORARILY_UNAVAILABLE", "RESOURCE_EXHAUSTED", "REQUEST_LIMIT_EXCEEDED", "DEADLINE_EXCEEDED", "UNAVAILABLE", "INTERNAL_ERROR":
			return KindTransient
		}
		return KindUnknown
	}
	if certificateError(err) != nil || isNXDomain(err) {
		// The workspace host is misconfigured (a name that does not exist,
		// a certificate that cannot be trusted): retrying cannot help.
		return KindConfig
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return KindTransient
	}
	if errors.Is(err, context.Canceled) {
		return KindUnknown
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return KindTransient
	}
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) {
		return KindTransient
	}
	return KindUnknown
}

// IsTransient reports whether err is a failure that retrying later can fix.
// It is the one retry predicate of this module: it answers yes exactly where
// the README's error table says "retry helps", from every entry point.
//
// The outermost error in err's chain that has a Transient() bool method
// decides: a *Error of kind transient, a *connector.WakeError (an endpoint
// that kept refusing connections while waking up), a *connector.LoginError
// whose forced token refresh failed transiently say yes; a
// *connector.ConfigError, any other *connector.LoginError and a *Error of
// another kind say no. Without such an error the chain's contents decide: an
// SDK *apierr.APIError with status 429 or 5xx, a net.Error, a deadline (a
// per-attempt timeout), a refused or reset connection are transient; 4xx
// errors, configuration and validation errors, a host name that does not
// exist (NXDOMAIN), a TLS certificate that cannot be verified, ErrClosed and
// a cancelled context are not.
func IsTransient(err error) bool {
	return err != nil && classify(err) == KindTransient
}

// errorType is the error.type attribute value for telemetry.
func errorType(err error) string {
	var ae *apierr.APIError
	if errors.As(err, &ae) {
		if ae.ErrorCode != "" {
			return ae.ErrorCode
		}
		return strconv.Itoa(ae.StatusCode)
	}
	switch classify(err) {
	case KindTransient:
		if errors.Is(err, context.DeadlineExceeded) {
			return "timeout"
		}
		return "network"
	case KindValidation:
		return "validation"
	case KindConfig:
		return "config"
	case KindClosed:
		return "closed"
	}
	return "_OTHER"
}
