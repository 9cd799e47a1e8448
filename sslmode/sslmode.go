package sslmode

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
)

// Mode is a libpq sslmode.
type Mode string

// The libpq modes.
const (
	Disable    Mode = "disable"
	Allow      Mode = "allow"
	Prefer     Mode = "prefer"
	Require    Mode = "require"
	VerifyCA   Mode = "verify-ca"
	VerifyFull Mode = "verify-full"
)

// Accepted lists the sslmode values Parse accepts.
const Accepted = "disable, prefer, require, verify-ca, verify-full"

// Error reports an unusable TLS setting. It names the setting and the fix.
type Error struct {
	Setting string // "sslmode", "sslrootcert" or "host"
	Value   string // the offending value (a mode or a file name; never a secret)
	Problem string // what is wrong
	Fix     string // what to do about it
	Err     error  // the underlying cause (a file error), if any
}

// Error implements error.
func (e *Error) Error() string {
	msg := "sslmode: " + e.Setting
	if e.Value != "" {
		msg += fmt.Sprintf(" %q", e.Value)
	}
	msg += ": " + e.Problem
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	if e.Fix != "" {
		msg += " (fix: " + e.Fix + ")"
	}
	return msg
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// Parse parses an sslmode ("" is verify-full). Case and surrounding space
// are ignored. allow is rejected: it would try plaintext first.
func Parse(s string) (Mode, error) {
	m := Mode(strings.ToLower(strings.TrimSpace(s)))
	switch m {
	case "":
		return VerifyFull, nil
	case Disable, Prefer, Require, VerifyCA, VerifyFull:
		return m, nil
	case Allow:
		return "", &Error{Setting: "sslmode", Value: s, Problem: "allow would try an unencrypted connection first", Fix: "use one of " + Accepted + " (verify-full is the default)"}
	}
	if len(s) > 64 {
		s = s[:64] + "..."
	}
	return "", &Error{Setting: "sslmode", Value: s, Problem: "unknown mode", Fix: "use one of " + Accepted + " (verify-full is the default)"}
}

// Options are the inputs of Configure.
type Options struct {
	Mode        string       // raw sslmode ("" = verify-full)
	Host        string       // server host: DNS name or IP literal
	RootCert    string       // PEM file of CA certificates, "system" or "" for the system roots
	RootCertPEM []byte       // PEM CA certificates; takes precedence over RootCert
	Logger      *slog.Logger // nil: slog.Default()
}

// Result is the outcome of Configure.
type Result struct {
	Requested Mode        // what was asked for
	Effective Mode        // what is used: VerifyFull or Disable
	TLS       *tls.Config // nil only when Effective is Disable
}

// Configure applies the policy to opts.
func Configure(opts Options) (Result, error) {
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	m, err := Parse(opts.Mode)
	if err != nil {
		return Result{}, err
	}
	res := Result{Requested: m, Effective: VerifyFull}
	if m == Disable {
		res.Effective = Disable
		if !IsLoopback(opts.Host) {
			log.Warn("sslmode: TLS disabled for a non-loopback host: the password travels in plaintext", slog.String("host", opts.Host))
		}
		return res, nil
	}
	if m != VerifyFull {
		log.Debug("sslmode: upgraded to verify-full", slog.String("requested", string(m)))
	}
	host := strings.TrimSpace(opts.Host)
	if host == "" {
		return Result{}, &Error{Setting: "host", Problem: "empty, so the server certificate cannot be verified", Fix: "set the host (PGHOST) or the endpoint to resolve it from"}
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: host}
	pem := opts.RootCertPEM
	source := "sslrootcert"
	if pem == nil && opts.RootCert != "" && opts.RootCert != "system" {
		b, err := os.ReadFile(opts.RootCert)
		if err != nil {
			return Result{}, &Error{Setting: "sslrootcert (PGSSLROOTCERT)", Value: opts.RootCert, Problem: "cannot read the CA file", Fix: "point it at a readable PEM file, or unset it to use the system roots", Err: err}
		}
		pem = b
	}
	if pem != nil {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return Result{}, &Error{Setting: source + " (PGSSLROOTCERT)", Value: opts.RootCert, Problem: "contains no PEM certificate", Fix: "use a PEM bundle of CA certificates, or unset it to use the system roots"}
		}
		cfg.RootCAs = pool
	}
	res.TLS = cfg
	return res, nil
}

// IsLoopback reports whether host is localhost, a loopback IP literal or a
// unix socket directory.
func IsLoopback(host string) bool {
	h := strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(host), "["), "]")
	if h == "" || strings.HasPrefix(h, "/") || strings.EqualFold(h, "localhost") {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}
