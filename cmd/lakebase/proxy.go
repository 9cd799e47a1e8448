package main

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/lakebase-go/lakebase/internal/proxy"
)

func proxyCommand() command {
	return command{
		name:    "proxy",
		summary: "run a local PostgreSQL proxy that logs clients in with current tokens",
		usage:   "[flags]",
		help: `Listens for PostgreSQL clients (psql, pg_dump, DBeaver, pgAdmin, DataGrip,
goose, Atlas, Flyway, dbmate, dbt, scripts) and logs each one in to
Lakebase with a current token, through the same path a Go program uses
(package connector: verify-full TLS, cold-start retries, refused-login
recovery). Clients connect without a password:

    lakebase proxy --endpoint projects/p/branches/b/endpoints/e &
    psql "host=127.0.0.1 port=5432 user=you@example.com dbname=databricks_postgres"

What it trusts: by default it listens on 127.0.0.1:5432 only, and every
local process that can reach that port can use the proxy's Lakebase
identity, as with a database password in ~/.pgpass. A client must name the
proxy's role as its user (FATAL 28000 otherwise, naming the role); an empty
user is accepted; --user-any accepts any user name (for tools that insist
on their own). A database equal to the user name (libpq's default when
none is given) means the proxy's database. Listening on any other address
needs --allow-non-loopback and --client-password-file: clients then
authenticate with SCRAM-SHA-256 (loopback clients too).

SSLRequest is answered N (plaintext on loopback); --tls-self-signed or
--tls-cert/--tls-key serve TLS to clients that insist on sslmode=require.
Cancel requests (psql's Ctrl-C, pgx and JDBC timeouts) are mapped to the
right Lakebase session and sent over a new TLS connection. A client that
vanishes mid-query has its query cancelled.

Operations: clients over --max-connections get FATAL 53300. SIGINT or
SIGTERM stops accepting, lets open sessions finish within --shutdown-grace,
then closes them and exits 0 (a second signal closes at once).
--http-address serves /livez and /readyz (a usable token and the last
backend login OK) with connection counts as JSON. Logs (stderr, text or
JSON) have one line per session open and close; never a token or password.`,
		run: runProxy,
	}
}

// listFlag is a repeatable string flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

type proxyFlags struct {
	settings
	listen              listFlag
	unixSocket          string
	allowNonLoopback    bool
	passwordFile        string
	userAny             bool
	maxConns            int
	grace, handshake    time.Duration
	httpAddress         string
	tlsCert, tlsKey     string
	tlsSelfSigned       bool
	logFormat, logLevel string
	startTimeout        time.Duration
}

func (f *proxyFlags) register(fs *flag.FlagSet) {
	f.settings.register(fs)
	fs.Var(&f.listen, "listen", "`address` to listen on, repeatable (default "+proxy.DefaultListen+")")
	fs.StringVar(&f.unixSocket, "unix-socket", "", "also listen on `dir`/.s.PGSQL.<port>, which psql -h dir finds")
	fs.BoolVar(&f.allowNonLoopback, "allow-non-loopback", false, "permit --listen addresses other than loopback (requires --client-password-file)")
	fs.StringVar(&f.passwordFile, "client-password-file", "", "`file` holding the password clients must give (SCRAM-SHA-256, printable ASCII; trailing newline ignored)")
	fs.BoolVar(&f.userAny, "user-any", false, "accept any user name in a client's startup (the session is still the proxy's role)")
	fs.IntVar(&f.maxConns, "max-connections", proxy.DefaultMaxConnections, "concurrent clients; more get FATAL 53300")
	fs.DurationVar(&f.grace, "shutdown-grace", proxy.DefaultShutdownGrace, "on SIGINT/SIGTERM, how long open sessions may run on (0: close them at once)")
	fs.DurationVar(&f.handshake, "handshake-timeout", proxy.DefaultHandshakeTimeout, "bound of a client's startup (not of the Lakebase login)")
	fs.StringVar(&f.httpAddress, "http-address", "", "serve /livez and /readyz on this `address` (for example 127.0.0.1:9090)")
	fs.StringVar(&f.tlsCert, "tls-cert", "", "PEM certificate `file` for TLS to clients (with --tls-key)")
	fs.StringVar(&f.tlsKey, "tls-key", "", "PEM private key `file` for --tls-cert")
	fs.BoolVar(&f.tlsSelfSigned, "tls-self-signed", false, "serve TLS to clients with a certificate generated at start (for sslmode=require)")
	fs.StringVar(&f.logFormat, "log-format", "text", "log format: text or json")
	fs.StringVar(&f.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.DurationVar(&f.startTimeout, "start-timeout", 2*time.Minute, "bound of the start-up (settings look-ups)")
}

// config turns the flags into a proxy configuration.
func (f *proxyFlags) config(logOut io.Writer) (proxy.Config, *slog.Logger, error) {
	if err := f.validate(); err != nil {
		return proxy.Config{}, nil, err
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(f.logLevel)); err != nil {
		return proxy.Config{}, nil, fmt.Errorf("lakebase: --log-level %q: not a level (fix: use debug, info, warn or error)", f.logLevel)
	}
	var logger *slog.Logger
	switch f.logFormat {
	case "text":
		logger = slog.New(slog.NewTextHandler(logOut, &slog.HandlerOptions{Level: level}))
	case "json":
		logger = slog.New(slog.NewJSONHandler(logOut, &slog.HandlerOptions{Level: level}))
	default:
		return proxy.Config{}, nil, fmt.Errorf("lakebase: --log-format %q: unknown (fix: use text or json)", f.logFormat)
	}
	cfg := proxy.Config{
		Connector: f.settings.config(logger), Listen: f.listen, UnixSocketDir: f.unixSocket, AllowNonLoopback: f.allowNonLoopback,
		UserAny: f.userAny, MaxConnections: f.maxConns, ShutdownGrace: f.grace, HandshakeTimeout: f.handshake,
		HTTPAddress: f.httpAddress, Logger: logger,
	}
	if f.maxConns <= 0 {
		return cfg, nil, fmt.Errorf("lakebase: --max-connections %d: must be positive", f.maxConns)
	}
	if f.grace <= 0 {
		cfg.ShutdownGrace = -1 // close at once (zero would be proxy's default)
	}
	if f.passwordFile != "" {
		b, err := os.ReadFile(f.passwordFile)
		if err != nil {
			return cfg, nil, fmt.Errorf("lakebase: --client-password-file: %w (fix: give a readable file holding the password)", err)
		}
		pw := strings.TrimRight(string(b), "\r\n")
		if pw == "" {
			return cfg, nil, fmt.Errorf("lakebase: --client-password-file %s is empty (fix: write the password clients must give into it)", f.passwordFile)
		}
		cfg.ClientPassword = pw
	}
	var tlsCfg *tls.Config
	switch {
	case f.tlsSelfSigned && (f.tlsCert != "" || f.tlsKey != ""):
		return cfg, nil, fmt.Errorf("lakebase: --tls-self-signed and --tls-cert/--tls-key are exclusive (fix: give one)")
	case f.tlsSelfSigned:
		c, err := proxy.SelfSignedTLS()
		if err != nil {
			return cfg, nil, err
		}
		tlsCfg = c
	case f.tlsCert != "" || f.tlsKey != "":
		if f.tlsCert == "" || f.tlsKey == "" {
			return cfg, nil, fmt.Errorf("lakebase: --tls-cert and --tls-key go together (fix: give both)")
		}
		c, err := proxy.LoadTLS(f.tlsCert, f.tlsKey)
		if err != nil {
			return cfg, nil, err
		}
		tlsCfg = c
	}
	cfg.TLS = tlsCfg
	return cfg, logger, nil
}

// notifySignals delivers SIGINT and SIGTERM to c until the returned
// function is called. (Tests of the command in-process cancel its ctx
// instead; the binary test sends real signals.)
func notifySignals(c chan<- os.Signal) func() {
	signal.Notify(c, syscall.SIGINT, syscall.SIGTERM)
	return func() { signal.Stop(c) }
}

func runProxy(ctx context.Context, fs *flag.FlagSet, args []string, out, errOut io.Writer) int {
	var f proxyFlags
	f.register(fs)
	if st, ok := parse(fs, args, out); !ok {
		return st
	}
	cfg, logger, err := f.config(errOut)
	if err != nil {
		fmt.Fprintln(errOut, err)
		return exitUsage
	}
	sigc := make(chan os.Signal, 2)
	stopSignals := notifySignals(sigc)
	defer stopSignals()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	// The first signal ends the start-up or, once serving, starts the
	// graceful shutdown; a second one closes everything at once.
	var srv atomicServer
	startCtx, startCancel := context.WithTimeout(ctx, f.startTimeout)
	defer startCancel()
	done := make(chan struct{})
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		select {
		case sig := <-sigc:
			logger.Info("lakebase proxy: signal received; shutting down gracefully (a second signal closes at once)", slog.String("signal", sig.String()))
			startCancel()
			cancel()
		case <-done:
			return
		}
		select {
		case <-sigc:
			logger.Warn("lakebase proxy: second signal; closing every session now")
			if s := srv.get(); s != nil {
				_ = s.Close()
			}
		case <-done:
		}
	}()
	defer func() { close(done); <-watched }()

	s, err := proxy.New(startCtx, cfg)
	if err != nil {
		fmt.Fprintln(errOut, err)
		return exitFail
	}
	srv.set(s)
	startCancel()
	if err := s.Run(ctx); err != nil {
		logger.Error("lakebase proxy: stopped with an error", slog.String("error", err.Error()))
		return exitFail
	}
	logger.Info("lakebase proxy: stopped")
	return exitOK
}

// atomicServer holds the server once it is built, for the signal watcher.
type atomicServer struct {
	mu sync.Mutex
	s  *proxy.Server
}

func (a *atomicServer) set(s *proxy.Server) { a.mu.Lock(); a.s = s; a.mu.Unlock() }

func (a *atomicServer) get() *proxy.Server {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.s
}
