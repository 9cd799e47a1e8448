package tokensource

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"regexp"
	"strings"
	"syscall"

	"github.com/databricks/databricks-sdk-go/apierr"
)

// Secret-shaped text that must never leave the package: JWTs, Databricks
// personal access tokens, JSON fields that carry credentials, bearer
// headers, and long opaque runs of token characters.
var secretPatterns = []*regexp.Regexp{
	regexp.MustCompile(`eyJ[A-Za-z0-9_\-]*\.?[A-Za-z0-9_\-]*\.?[A-Za-z0-9_\-]*`),
	regexp.MustCompile(`dapi[A-Za-z0-9\-]+`),
	regexp.MustCompile(`(?i)"(token|access_token|refresh_token|id_token|password|client_secret|secret)"\s*:\s*"[^"]*"?`),
	regexp.MustCompile(`(?i)\b(bearer\s+|(?:access_token|token|password|secret)=)[^\s,;"'&]+`),
	regexp.MustCompile(`[A-Za-z0-9_\-+=.~]{40,}`),
}

// sdkDumpMarkers start the request/response dumps the Databricks SDK
// appends to some errors (they can quote a response body).
var sdkDumpMarkers = []string{"Request log:", "```", "< HTTP/", "> POST", "> GET"}

// maxMessage bounds a scrubbed message.
const maxMessage = 512

// Scrub returns msg with anything that may be a credential removed: the
// request/response dump the Databricks SDK appends to some errors, JWTs,
// personal access tokens, JSON credential fields and long opaque strings.
// It is applied to every fetch error this package returns, logs or records
// in a span; it is exported for callers that format errors of their own
// FetchFunc.
func Scrub(msg string) string {
	for _, m := range sdkDumpMarkers {
		if i := strings.Index(msg, m); i >= 0 {
			msg = strings.TrimSpace(msg[:i]) + " [response details removed]"
		}
	}
	for _, re := range secretPatterns {
		msg = re.ReplaceAllStringFunc(msg, func(s string) string {
			if sm := re.FindStringSubmatchIndex(s); len(sm) >= 4 && sm[2] >= 0 && re == secretPatterns[3] {
				return s[:sm[3]] + "[REDACTED]" // keep "password=" / "Bearer "
			}
			return "[REDACTED]"
		})
	}
	if len(msg) > maxMessage {
		msg = msg[:maxMessage] + "…"
	}
	return msg
}

// scrubbed is an error whose text has been scrubbed and whose chain holds
// only values that cannot carry a secret (a copy of the API error with a
// scrubbed message, context errors, network and certificate errors), so
// errors.Is/As keep working without the original text being reachable.
type scrubbed struct {
	msg    string
	causes []error
}

func (e *scrubbed) Error() string   { return e.msg }
func (e *scrubbed) Unwrap() []error { return e.causes }

// scrubErr returns err with its text scrubbed and its chain reduced to
// values that are safe to print. A nil error stays nil; errors of this
// package (already safe) are returned unchanged.
func scrubErr(err error) error {
	if err == nil {
		return nil
	}
	switch err.(type) {
	case *ValidationError, *ConfigError, *scrubbed:
		return err
	}
	if errors.Is(err, ErrClosed) {
		return err
	}
	s := &scrubbed{msg: Scrub(err.Error())}
	var ae *apierr.APIError
	if errors.As(err, &ae) {
		s.causes = append(s.causes, &apierr.APIError{ErrorCode: ae.ErrorCode, StatusCode: ae.StatusCode, Message: Scrub(ae.Message)})
	}
	for _, target := range []error{context.DeadlineExceeded, context.Canceled, syscall.ECONNREFUSED, syscall.ECONNRESET, syscall.ETIMEDOUT} {
		if errors.Is(err, target) {
			s.causes = append(s.causes, target)
		}
	}
	var dns *net.DNSError
	if errors.As(err, &dns) {
		s.causes = append(s.causes, &net.DNSError{Err: dns.Err, Name: dns.Name, IsNotFound: dns.IsNotFound, IsTimeout: dns.IsTimeout, IsTemporary: dns.IsTemporary})
	}
	if cert := certificateError(err); cert != nil {
		s.causes = append(s.causes, cert)
	}
	for _, target := range []error{io.EOF, io.ErrUnexpectedEOF} {
		if errors.Is(err, target) {
			s.causes = append(s.causes, target)
		}
	}
	var ne net.Error
	if errors.As(err, &ne) && !isNXDomain(err) && certificateError(err) == nil {
		s.causes = append(s.causes, networkError{timeout: ne.Timeout()})
	}
	return s
}

// networkError stands for a network failure in a scrubbed chain.
type networkError struct{ timeout bool }

func (e networkError) Error() string {
	if e.timeout {
		return "network timeout"
	}
	return "network error"
}
func (e networkError) Timeout() bool   { return e.timeout }
func (e networkError) Temporary() bool { return true }

// certificateError returns a *CertificateError if err is a TLS certificate
// verification failure.
func certificateError(err error) *CertificateError {
	var ce *CertificateError
	if errors.As(err, &ce) {
		return ce
	}
	var (
		ua x509.UnknownAuthorityError
		he x509.HostnameError
		ci x509.CertificateInvalidError
		tv *tls.CertificateVerificationError
	)
	switch {
	case errors.As(err, &ua):
		return &CertificateError{Reason: "signed by an unknown authority"}
	case errors.As(err, &he):
		return &CertificateError{Reason: "issued for another host name"}
	case errors.As(err, &ci):
		return &CertificateError{Reason: "invalid (expired or not yet valid)"}
	case errors.As(err, &tv):
		return &CertificateError{Reason: "verification failed"}
	}
	return nil
}

// isNXDomain reports whether err says a host name does not exist.
func isNXDomain(err error) bool {
	var dns *net.DNSError
	return errors.As(err, &dns) && dns.IsNotFound
}
