package lakebasetest

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/databricks/databricks-sdk-go/config"
	"github.com/jackc/pgx/v5"

	"github.com/lakebase-go/lakebase/internal/sdkclient"
)

const (
	adminRole        = "lakebase_admin"
	databaseName     = "databricks_postgres"
	endpointName     = "projects/demo/branches/main/endpoints/primary"
	instanceName     = "demo-instance"
	servicePrincipal = "6f1c2d3e-4a5b-4c6d-8e7f-0123456789ab"
)

type emuConfig struct {
	plaintext, plaintextOnly, expiredCert bool
	certHosts                             []string
	ttl, minTTL                           time.Duration
	tokenSize                             int
	logger                                *slog.Logger
	standby                               bool
}

// Option configures an Emulator.
type Option func(*emuConfig)

// WithPlaintext also accepts unencrypted connections (pg_hba "host" lines).
// By default only TLS is accepted, like Lakebase.
func WithPlaintext() Option { return func(c *emuConfig) { c.plaintext = true } }

// WithPlaintextOnly turns TLS off in the server (ssl=off): for TLS-policy
// tests.
func WithPlaintextOnly() Option { return func(c *emuConfig) { c.plaintextOnly = true } }

// WithExpiredServerCert makes the server certificate's validity end in the
// past.
func WithExpiredServerCert() Option { return func(c *emuConfig) { c.expiredCert = true } }

// WithServerCertHosts issues the server certificate for hosts instead of
// localhost and 127.0.0.1 (for wrong-hostname TLS tests).
func WithServerCertHosts(hosts ...string) Option {
	return func(c *emuConfig) { c.certHosts = hosts }
}

// WithTTL sets the lifetime of credentials minted without a requested TTL
// (default 1 h, like the service).
func WithTTL(d time.Duration) Option { return func(c *emuConfig) { c.ttl = d } }

// WithMinTTL lowers the 5-minute floor of requested TTLs, for rotation tests.
func WithMinTTL(d time.Duration) Option { return func(c *emuConfig) { c.minTTL = d } }

// WithTokenSize sets the length in bytes of minted credentials (default
// DefaultTokenSize, 1024; real ones are roughly 1–2 KB). New fails if n is
// too small for a JWT-shaped token (about 600 bytes).
func WithTokenSize(n int) Option { return func(c *emuConfig) { c.tokenSize = n } }

// WithLogger receives the emulator's own log lines.
func WithLogger(l *slog.Logger) Option { return func(c *emuConfig) { c.logger = l } }

// Emulator is a local Lakebase: a throwaway PostgreSQL cluster whose
// non-admin logins are checked against tokens this emulator minted (through
// an LDAP simple bind to an in-process responder), plus a fake workspace API that mints them. Safe for concurrent
// use.
type Emulator struct {
	cfg      emuConfig
	bin      string
	user     osUser
	dir      string
	data     string
	port     int
	caFile   string
	caPEM    []byte
	tlsCfg   *tls.Config // the server certificate, for the front door and the pooler
	adminPW  string
	spSecret string

	front *frontDoor
	pool  *pooler

	tokens *tokenStore
	ldap   *ldapServer
	api    *api
	http   *httptest.Server

	ha ha // the hot standby and failover (standby.go)

	mu      sync.Mutex
	ttlVal  time.Duration
	running bool
	closed  bool
}

// Start starts an emulator for a test and closes it in t.Cleanup. Without
// PostgreSQL binaries the test is skipped, unless LAKEBASE_TEST_REQUIRE_PG=1,
// where it fails.
func Start(t testing.TB, opts ...Option) *Emulator {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	e, err := New(ctx, opts...)
	if err != nil {
		if errors.Is(err, ErrPostgresNotFound) && os.Getenv("LAKEBASE_TEST_REQUIRE_PG") != "1" {
			t.Skip(err.Error())
		}
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := e.Close(); err != nil {
			t.Errorf("lakebasetest: close: %v", err)
		}
	})
	return e
}

// New starts an emulator; the caller must Close it. Errors wrap
// ErrPostgresNotFound when the server binaries are missing.
func New(ctx context.Context, opts ...Option) (_ *Emulator, err error) {
	cfg := emuConfig{ttl: time.Hour, minTTL: 5 * time.Minute}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.tokenSize == 0 {
		cfg.tokenSize = DefaultTokenSize
	}
	if err := validTokenSize(cfg.tokenSize); err != nil {
		return nil, err
	}
	if cfg.logger == nil {
		cfg.logger = slog.New(slog.DiscardHandler)
	}
	bin, err := findBinDir()
	if err != nil {
		return nil, err
	}
	u, err := serverUser()
	if err != nil {
		return nil, err
	}
	e := &Emulator{cfg: cfg, bin: bin, user: u, tokens: newTokenStore(cfg.tokenSize), ttlVal: cfg.ttl}
	defer func() {
		if err != nil {
			_ = e.Close()
		}
	}()
	if e.dir, err = os.MkdirTemp("", "lakebasetest-*"); err != nil {
		return nil, err
	}
	e.data = filepath.Join(e.dir, "data")
	tmpl, err := template(bin, u)
	if err != nil {
		return nil, err
	}
	if err := copyDir(tmpl, e.data); err != nil {
		return nil, err
	}
	if e.ldap, err = startLDAP(e.tokens.check); err != nil {
		return nil, err
	}
	// The port is picked free and then bound by PostgreSQL a moment later;
	// another process (parallel test binaries start emulators too) can take
	// it in between, so a bind failure is retried with a new port.
	for attempt := 1; ; attempt++ {
		if e.port, err = freePort(); err != nil {
			return nil, err
		}
		if err := e.writeConfig(); err != nil {
			return nil, err
		}
		if err := e.user.chown(e.dir); err != nil {
			return nil, err
		}
		if err := os.Chmod(e.dir, 0o755); err != nil {
			return nil, err
		}
		err = e.Start(ctx)
		if err == nil {
			break
		}
		if attempt >= 5 || !strings.Contains(err.Error(), "Address already in use") {
			return nil, err
		}
	}
	if err := e.bootstrap(ctx); err != nil {
		return nil, err
	}
	if e.front, err = startFrontDoor(e.port, e.tlsCfg); err != nil {
		return nil, fmt.Errorf("lakebasetest: front door: %w", err)
	}
	if e.pool, err = startPooler(e.front.srv.port(), e.port, e.tlsCfg); err != nil {
		return nil, fmt.Errorf("lakebasetest: pooler: %w", err)
	}
	e.spSecret = "dose" + randomString(24)
	e.api = newAPI(e)
	e.api.identities[spBearer(e)] = servicePrincipal
	e.api.ids[servicePrincipal] = 1
	e.api.clients[servicePrincipal] = e.spSecret
	e.http = httptest.NewServer(e.api)
	if cfg.standby {
		if _, err := e.StartStandby(ctx); err != nil {
			return nil, err
		}
	}
	return e, nil
}

func spBearer(e *Emulator) string { return "dapi-sp-" + strconv.Itoa(e.port) }

func randomString(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// writeConfig writes TLS material, postgresql.conf settings and pg_hba.conf.
func (e *Emulator) writeConfig() error {
	hosts := e.cfg.certHosts
	if len(hosts) == 0 {
		hosts = []string{"localhost", "127.0.0.1", poolerAddr, standbyAddr}
	}
	c, err := newCerts(hosts, e.cfg.expiredCert)
	if err != nil {
		return err
	}
	if !e.cfg.plaintextOnly {
		kp, err := tls.X509KeyPair(c.certPEM, c.keyPEM)
		if err != nil {
			return fmt.Errorf("lakebasetest: server key pair: %w", err)
		}
		e.tlsCfg = &tls.Config{Certificates: []tls.Certificate{kp}, MinVersion: tls.VersionTLS12}
	}
	e.caPEM = c.caPEM
	e.caFile = filepath.Join(e.dir, "ca.pem")
	files := map[string][]byte{
		e.caFile:                            c.caPEM,
		filepath.Join(e.data, "server.crt"): c.certPEM,
		filepath.Join(e.data, "server.key"): c.keyPEM,
	}
	for p, b := range files {
		if err := os.WriteFile(p, b, 0o600); err != nil {
			return err
		}
	}
	if err := os.Chmod(e.caFile, 0o644); err != nil {
		return err
	}
	ssl := "on"
	if e.cfg.plaintextOnly {
		ssl = "off"
	}
	conf := fmt.Sprintf(`
listen_addresses = '127.0.0.1'
port = %d
unix_socket_directories = '%s'
ssl = %s
ssl_cert_file = 'server.crt'
ssl_key_file = 'server.key'
max_connections = 1100
shared_buffers = 16MB
fsync = off
synchronous_commit = off
full_page_writes = off
log_min_messages = warning
`, e.port, e.dir, ssl)
	f, err := os.OpenFile(filepath.Join(e.data, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(conf); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	token := e.ldap.hbaMethod()
	var hba strings.Builder
	hba.WriteString("local all " + adminRole + " trust\n")
	hba.WriteString("local replication " + adminRole + " trust\n") // pg_basebackup and the standby (standby.go)
	tls, plain := !e.cfg.plaintextOnly, e.cfg.plaintext || e.cfg.plaintextOnly
	if tls {
		hba.WriteString("hostssl all " + adminRole + " 127.0.0.1/32 scram-sha-256\n")
		hba.WriteString("hostssl all all 127.0.0.1/32 " + token + "\n")
	}
	if plain {
		hba.WriteString("hostnossl all " + adminRole + " 127.0.0.1/32 scram-sha-256\n")
		hba.WriteString("hostnossl all all 127.0.0.1/32 " + token + "\n")
	}
	return os.WriteFile(filepath.Join(e.data, "pg_hba.conf"), []byte(hba.String()), 0o600)
}

// bootstrap sets the admin password, creates the database and the service
// principal's role.
func (e *Emulator) bootstrap(ctx context.Context) error {
	e.adminPW = randomString(18)
	conn, err := pgx.Connect(ctx, fmt.Sprintf("host=%s port=%d user=%s dbname=postgres sslmode=disable", e.dir, e.port, adminRole))
	if err != nil {
		return fmt.Errorf("lakebasetest: connect as admin: %w", err)
	}
	defer conn.Close(ctx)
	for _, q := range []string{
		fmt.Sprintf("ALTER ROLE %s PASSWORD '%s'", adminRole, e.adminPW),
		"CREATE DATABASE " + databaseName,
	} {
		if _, err := conn.Exec(ctx, q); err != nil {
			return fmt.Errorf("lakebasetest: bootstrap: %w", err)
		}
	}
	return e.createRole(ctx, servicePrincipal)
}

// createRole creates a login role that may connect and create objects in
// the public schema (as a Lakebase role created with databricks_create_role
// and granted usage would).
func (e *Emulator) createRole(ctx context.Context, role string) error {
	id := pgx.Identifier{role}.Sanitize()
	return e.AdminExec(ctx, fmt.Sprintf("CREATE ROLE %[1]s LOGIN; GRANT ALL ON DATABASE %[2]s TO %[1]s; GRANT ALL ON SCHEMA public TO %[1]s", id, databaseName))
}

func (e *Emulator) pgCtl(args ...string) error {
	return e.user.run(filepath.Join(e.bin, "pg_ctl"), append([]string{"-D", e.data}, args...)...)
}

// Start starts PostgreSQL (after Stop). New starts it already.
func (e *Emulator) Start(ctx context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.running {
		return nil
	}
	if err := e.pgCtl("-w", "-t", "30", "-l", filepath.Join(e.dir, "postgres.log"), "start"); err != nil {
		log, _ := os.ReadFile(filepath.Join(e.dir, "postgres.log"))
		return fmt.Errorf("%w\nserver log:\n%s", err, log)
	}
	e.running = true
	return ctx.Err()
}

// Stop stops PostgreSQL (fast shutdown: sessions are disconnected), keeping
// its data.
func (e *Emulator) Stop(context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.running {
		return nil
	}
	e.running = false
	return e.pgCtl("-w", "-m", "fast", "stop")
}

// Restart stops and starts PostgreSQL on the same port with the same data.
func (e *Emulator) Restart(ctx context.Context) error {
	if err := e.Stop(ctx); err != nil {
		return err
	}
	return e.Start(ctx)
}

// Close stops PostgreSQL, the LDAP responder and the API, and removes the
// temporary directory. It is idempotent.
func (e *Emulator) Close() error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil
	}
	e.closed = true
	e.mu.Unlock()
	var errs []error
	if e.http != nil {
		e.http.CloseClientConnections()
		e.http.Close()
	}
	if e.front != nil {
		e.front.close()
	}
	if e.pool != nil {
		e.pool.close()
	}
	errs = append(errs, e.closeHA())
	if e.data != "" {
		errs = append(errs, e.Stop(context.Background()))
	}
	if e.ldap != nil {
		e.ldap.close()
	}
	if e.dir != "" {
		errs = append(errs, os.RemoveAll(e.dir))
	}
	return errors.Join(errs...)
}

// Host is the server host name; the certificate is valid for it, for
// 127.0.0.1 and for PoolerHost (unless WithServerCertHosts replaced them).
// Both Port and FrontDoorPort are reached with it.
func (e *Emulator) Host() string { return "localhost" }

// Port is PostgreSQL's own TCP port: direct, never suspended (Env, the
// benchmarks and the existing tests use it). FrontDoorPort is the
// endpoint's scale-to-zero door to the same server.
func (e *Emulator) Port() int { return e.port }

// Database is the database every role may use.
func (e *Emulator) Database() string { return databaseName }

// Endpoint is the autoscaling endpoint the fake API knows.
func (e *Emulator) Endpoint() string { return endpointName }

// Instance is the provisioned instance the fake API knows.
func (e *Emulator) Instance() string { return instanceName }

// WorkspaceURL is the fake workspace API's base URL.
func (e *Emulator) WorkspaceURL() string { return e.http.URL }

// CAFile is a PEM file with the CA that signed the server certificate.
func (e *Emulator) CAFile() string { return e.caFile }

// CAPEM returns the CA certificate.
func (e *Emulator) CAPEM() []byte { return append([]byte(nil), e.caPEM...) }

// Dir is the emulator's temporary directory (removed by Close).
func (e *Emulator) Dir() string { return e.dir }

// ServicePrincipal is the application id of the default identity; it is
// also its Postgres role.
func (e *Emulator) ServicePrincipal() string { return servicePrincipal }

// ServicePrincipalToken is the service principal's bearer token for the
// fake API.
func (e *Emulator) ServicePrincipalToken() string { return spBearer(e) }

// WorkspaceConfig returns the Databricks SDK settings of the fake API,
// acting as the service principal, for connector.Config.WorkspaceConfig
// (a new value on each call: the SDK resolves it in place). A test that
// needs a full SDK client builds one from it:
// databricks.NewWorkspaceClient((*databricks.Config)(e.WorkspaceConfig())).
// (The emulator offers no such method itself: importing the SDK's
// databricks package compiles every one of its services into each test.)
func (e *Emulator) WorkspaceConfig() *config.Config {
	return e.WorkspaceConfigFor(spBearer(e))
}

// WorkspaceConfigFor is WorkspaceConfig with bearer: a PAT configuration
// that reads nothing from DATABRICKS_* variables or ~/.databrickscfg and
// skips the host-metadata lookup.
func (e *Emulator) WorkspaceConfigFor(bearer string) *config.Config {
	return sdkclient.PATConfig(e.http.URL, bearer, nil)
}

// AddUser adds a workspace user and its Postgres role; it returns the
// user's bearer token (what Databricks Apps forward as
// X-Forwarded-Access-Token).
func (e *Emulator) AddUser(ctx context.Context, email string) (string, error) {
	if err := e.createRole(ctx, email); err != nil {
		return "", err
	}
	return e.AddIdentityWithoutRole(email), nil
}

// AddIdentityWithoutRole adds a workspace identity that has no Postgres
// role: its credentials mint fine but its logins fail.
func (e *Emulator) AddIdentityWithoutRole(email string) string {
	bearer := "dapi-user-" + randomString(12)
	e.api.mu.Lock()
	defer e.api.mu.Unlock()
	e.api.identities[bearer] = email
	if _, ok := e.api.ids[email]; !ok {
		e.api.ids[email] = len(e.api.ids) + 1
	}
	return bearer
}

// Env returns a PAT-style environment for this emulator: DATABRICKS_TOKEN
// of the service principal and PGPORT = Port (direct, never suspended).
// For what a Databricks App really gets (OAuth M2M, the front door) use
// AppEnv.
func (e *Emulator) Env() map[string]string {
	return map[string]string{
		"DATABRICKS_HOST":   e.http.URL,
		"DATABRICKS_TOKEN":  spBearer(e),
		"LAKEBASE_ENDPOINT": endpointName,
		"PGHOST":            e.Host(),
		"PGPORT":            strconv.Itoa(e.port),
		"PGDATABASE":        databaseName,
		"PGUSER":            servicePrincipal,
		"PGSSLMODE":         "verify-full",
		"PGSSLROOTCERT":     e.caFile,
	}
}

// AdminConnString is a keyword/value DSN for the superuser (test-only: it
// holds the admin password).
func (e *Emulator) AdminConnString() string {
	mode := "verify-full"
	if e.cfg.plaintextOnly {
		mode = "disable"
	}
	return fmt.Sprintf("host=localhost port=%d dbname=%s user=%s password=%s sslmode=%s sslrootcert='%s'",
		e.port, databaseName, adminRole, e.adminPW, mode, e.caFile)
}

// AdminExec runs sql as the superuser in the database (multiple statements
// are allowed without args).
func (e *Emulator) AdminExec(ctx context.Context, sql string, args ...any) error {
	conn, err := pgx.Connect(ctx, fmt.Sprintf("host=%s port=%d user=%s dbname=%s sslmode=disable", e.adminSocket(), e.port, adminRole, databaseName))
	if err != nil {
		return fmt.Errorf("lakebasetest: admin connect: %w", err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, sql, args...); err != nil {
		return fmt.Errorf("lakebasetest: admin exec: %w", err)
	}
	return nil
}

// MintToken mints a credential for role directly, bypassing the API.
func (e *Emulator) MintToken(role string, ttl time.Duration) string {
	tok, _ := e.tokens.mint(role, ttl)
	return tok
}

// RevokeRole makes every token minted so far for role invalid.
func (e *Emulator) RevokeRole(role string) { e.tokens.revoke(role) }

// SetTTL sets the lifetime of credentials minted without a requested TTL.
func (e *Emulator) SetTTL(d time.Duration) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.ttlVal = d
}

func (e *Emulator) ttl() time.Duration {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.ttlVal
}

// FailNext makes the next n calls of r answer status with errorCode in
// Databricks' error JSON. n = 0 clears it.
func (e *Emulator) FailNext(r Route, n int, status int, errorCode string) {
	e.api.mu.Lock()
	defer e.api.mu.Unlock()
	e.api.fail[r] = &failure{n: n, status: status, code: errorCode}
}

// SetLatency delays every call of r by d (0 clears it). A delayed call ends
// early if its client goes away.
func (e *Emulator) SetLatency(r Route, d time.Duration) {
	e.api.mu.Lock()
	defer e.api.mu.Unlock()
	e.api.latency[r] = d
}

// SetFault makes successful calls of a credential route misbehave until
// SetFault(r, FaultNone).
func (e *Emulator) SetFault(r Route, f Fault) {
	e.api.mu.Lock()
	defer e.api.mu.Unlock()
	e.api.faults[r] = f
}

// Calls counts the requests to r, failed ones included.
func (e *Emulator) Calls(r Route) int64 {
	if c, ok := e.api.calls[r]; ok {
		return c.Load()
	}
	return 0
}

// MintsBy counts the credentials minted with bearer.
func (e *Emulator) MintsBy(bearer string) int64 {
	e.api.mu.Lock()
	defer e.api.mu.Unlock()
	if c, ok := e.api.mintsBy[bearer]; ok {
		return c.Load()
	}
	return 0
}

// ResetCalls zeroes the route counters.
func (e *Emulator) ResetCalls() {
	for _, c := range e.api.calls {
		c.Store(0)
	}
}

// Logins counts the token logins accepted for role.
func (e *Emulator) Logins(role string) int64 { return e.tokens.count(e.tokens.logins, role) }

// Rejects counts the token logins refused for role.
func (e *Emulator) Rejects(role string) int64 { return e.tokens.count(e.tokens.rejects, role) }
