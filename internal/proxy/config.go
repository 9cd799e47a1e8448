package proxy

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"time"

	"github.com/lakebase-go/lakebase/connector"
)

// Defaults for the zero values of Config.
const (
	// DefaultListen is the address the proxy listens on when Config.Listen
	// is empty: loopback, PostgreSQL's port.
	DefaultListen = "127.0.0.1:5432"
	// DefaultMaxConnections caps concurrent client connections.
	DefaultMaxConnections = 100
	// DefaultShutdownGrace is how long open sessions may run on after a
	// shutdown starts.
	DefaultShutdownGrace = 30 * time.Second
	// DefaultHandshakeTimeout bounds a client's startup (SSL negotiation,
	// startup message, client password), not the backend login.
	DefaultHandshakeTimeout = 10 * time.Second
	// cancelTimeout bounds the delivery of one cancel request to the
	// backend.
	cancelTimeout = 5 * time.Second
)

// Config configures a Server. Zero fields take the defaults above.
type Config struct {
	// Connector is how the proxy logs in to Lakebase: resolved by
	// connector.New exactly as for a Go program (explicit fields, then
	// LAKEBASE_*/PG* and the Databricks SDK's environment). Every client
	// session gets a new physical connection through the connector's own
	// login path (current token, TLS policy, cold-start retries,
	// refused-login recovery) with the client's database,
	// application_name, options and other startup parameters. Telemetry
	// must be off (the proxy takes the raw connection).
	Connector connector.Config

	// Listen are the TCP addresses to listen on. Empty: DefaultListen.
	// An address that is not loopback is refused unless AllowNonLoopback
	// is set and ClientPassword is not empty.
	Listen []string
	// UnixSocketDir, if set, is a directory where the proxy also listens on
	// the socket ".s.PGSQL.<port>" (port: that of the first TCP address),
	// the name psql and libpq look for with -h DIR.
	UnixSocketDir string
	// AllowNonLoopback permits listening on addresses other than loopback.
	// Anyone who can reach such an address could use the proxy's identity,
	// so ClientPassword is then required.
	AllowNonLoopback bool
	// ClientPassword, if set, is the password every client must give
	// (SCRAM-SHA-256; printable ASCII). Loopback clients too.
	ClientPassword string
	// UserAny accepts any user name in a client's startup message. By
	// default a client must name the proxy's role (or send an empty user).
	UserAny bool

	// MaxConnections caps concurrent client connections; clients over it
	// get FATAL 53300. Zero: DefaultMaxConnections.
	MaxConnections int
	// ShutdownGrace is how long open sessions may run on after a shutdown
	// starts; sessions still open then are closed. Zero:
	// DefaultShutdownGrace; negative: none (close at once).
	ShutdownGrace time.Duration
	// HandshakeTimeout bounds a client's startup. Zero:
	// DefaultHandshakeTimeout.
	HandshakeTimeout time.Duration

	// TLS, if set, is offered to clients that send an SSLRequest (for
	// clients configured with sslmode=require). Nil: SSLRequest is answered
	// N and the session is plaintext between the client and the proxy.
	TLS *tls.Config

	// HTTPAddress, if set, serves /livez and /readyz (JSON with connection
	// counts) on this address.
	HTTPAddress string

	// Logger receives one line per session open and close, and the
	// proxy's own events. Nil: slog.Default(). Nothing logged contains a
	// token or a password.
	Logger *slog.Logger
}

// ConfigError reports a proxy setting that cannot work; the message names
// the setting and the fix.
type ConfigError struct {
	Setting string // the Config field (and command-line flag)
	Problem string
	Fix     string
	Err     error
}

// Error implements error.
func (e *ConfigError) Error() string {
	msg := "proxy: " + e.Setting + ": " + e.Problem
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

var _ error = (*ConfigError)(nil)

func (c Config) withDefaults() Config {
	if len(c.Listen) == 0 {
		c.Listen = []string{DefaultListen}
	}
	if c.MaxConnections <= 0 {
		c.MaxConnections = DefaultMaxConnections
	}
	if c.ShutdownGrace == 0 {
		c.ShutdownGrace = DefaultShutdownGrace
	}
	if c.ShutdownGrace < 0 {
		c.ShutdownGrace = 0
	}
	if c.HandshakeTimeout <= 0 {
		c.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// validPassword checks a client password: SCRAM needs SASLprep for
// anything but printable ASCII, which the proxy does not implement.
func validPassword(pw string) error {
	for i := 0; i < len(pw); i++ {
		if pw[i] < 0x20 || pw[i] > 0x7e {
			return &ConfigError{Setting: "ClientPassword (--client-password-file)", Problem: fmt.Sprintf("byte %d is not printable ASCII", i+1),
				Fix: "use a password of printable ASCII characters (letters, digits, punctuation, space)"}
		}
	}
	return nil
}
