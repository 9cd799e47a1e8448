package proxy

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/goleak"

	"github.com/lakebase-go/lakebase/connector"
	"github.com/lakebase-go/lakebase/internal/leaktest"
	"github.com/lakebase-go/lakebase/lakebasetest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, leaktest.Options()...) }

func noEnv(string) (string, bool) { return "", false }

// syncBuffer collects log output from many goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// lines returns the JSON log records whose msg is msg.
func (s *syncBuffer) lines(t testing.TB, msg string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, l := range strings.Split(s.String(), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("log line is not JSON: %q", l)
		}
		if m["msg"] == msg {
			out = append(out, m)
		}
	}
	return out
}

// connectorConfig is the connector configuration for e: explicit fields,
// nothing from the environment.
func connectorConfig(t testing.TB, e *lakebasetest.Emulator, logger *slog.Logger) connector.Config {
	t.Helper()
	return connector.Config{Endpoint: e.Endpoint(), Host: e.Host(), Port: e.Port(), Database: e.Database(),
		User: e.ServicePrincipal(), SSLRootCert: e.CAFile(), WorkspaceConfig: e.WorkspaceConfig(), LookupEnv: noEnv, Logger: logger}
}

// harness is a running proxy in front of an emulator.
type harness struct {
	t    testing.TB
	e    *lakebasetest.Emulator
	s    *Server
	port int
	logs *syncBuffer
	stop context.CancelFunc
	done chan error
}

// startProxy starts a proxy for e (loopback, a free port, JSON logs into a
// buffer); edit changes the configuration first. The proxy is shut down in
// t.Cleanup.
func startProxy(t testing.TB, e *lakebasetest.Emulator, edit func(*Config)) *harness {
	t.Helper()
	logs := &syncBuffer{}
	logger := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	cfg := Config{Connector: connectorConfig(t, e, logger), Listen: []string{"127.0.0.1:0"}, Logger: logger, ShutdownGrace: 5 * time.Second}
	if edit != nil {
		edit(&cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := New(ctx, cfg)
	if err != nil {
		t.Fatalf("proxy.New: %v", err)
	}
	h := &harness{t: t, e: e, s: s, logs: logs, done: make(chan error, 1)}
	h.port = s.Addrs()[0].(*net.TCPAddr).Port
	runCtx, stop := context.WithCancel(context.Background())
	h.stop = stop
	go func() { h.done <- s.Run(runCtx) }()
	t.Cleanup(func() {
		if err := h.shutdown(30 * time.Second); err != nil {
			t.Errorf("proxy Run: %v", err)
		}
	})
	return h
}

// shutdown ends Run and waits at most d for it.
func (h *harness) shutdown(d time.Duration) error {
	h.stop()
	select {
	case err, ok := <-h.done:
		if ok {
			close(h.done)
			return err
		}
		return nil
	case <-time.After(d):
		_ = h.s.Close()
		return fmt.Errorf("Run did not return within %v of the shutdown", d)
	}
}

func (h *harness) role() string { return h.e.ServicePrincipal() }

// dsn is a libpq keyword/value string for the proxy.
func (h *harness) dsn(extra string) string {
	return fmt.Sprintf("host=127.0.0.1 port=%d user=%s dbname=%s sslmode=disable %s", h.port, h.role(), h.e.Database(), extra)
}

// connect opens a pgx connection through the proxy.
func (h *harness) connect(ctx context.Context, extra string) (*pgx.Conn, error) {
	return pgx.Connect(ctx, h.dsn(extra))
}

func (h *harness) mustConnect(ctx context.Context) *pgx.Conn {
	h.t.Helper()
	c, err := h.connect(ctx, "")
	if err != nil {
		h.t.Fatalf("connect through the proxy: %v", err)
	}
	h.t.Cleanup(func() { _ = c.Close(context.Background()) })
	return c
}

// admin runs a query as the emulator's superuser and scans one row.
func admin(t testing.TB, e *lakebasetest.Emulator, dest []any, sql string, args ...any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, e.AdminConnString())
	if err != nil {
		t.Fatalf("admin connect: %v", err)
	}
	defer c.Close(context.Background())
	if err := c.QueryRow(ctx, sql, args...).Scan(dest...); err != nil {
		t.Fatalf("admin %q: %v", sql, err)
	}
}

// backends counts the role's client backends, optionally only those
// running a query that starts with prefix.
func backends(t testing.TB, e *lakebasetest.Emulator, role, activePrefix string) int {
	t.Helper()
	var n int
	if activePrefix == "" {
		admin(t, e, []any{&n}, "SELECT count(*) FROM pg_stat_activity WHERE usename = $1 AND backend_type = 'client backend'", role)
	} else {
		admin(t, e, []any{&n}, "SELECT count(*) FROM pg_stat_activity WHERE usename = $1 AND backend_type = 'client backend' AND state = 'active' AND query LIKE $2", role, activePrefix+"%")
	}
	return n
}

// eventually polls cond every 20 ms until it holds or d passes.
func eventually(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not true after %v", what, d)
		}
		tm := time.NewTimer(20 * time.Millisecond)
		<-tm.C
	}
}

// psqlPath finds the PostgreSQL client binaries; tests that need them
// skip without them (fail under LAKEBASE_TEST_REQUIRE_PG=1).
func pgBin(t testing.TB, name string) string {
	t.Helper()
	for _, p := range []string{"/usr/lib/postgresql/15/bin/" + name, "/usr/bin/" + name} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	if os.Getenv("LAKEBASE_TEST_REQUIRE_PG") == "1" {
		t.Fatalf("%s not found", name)
	}
	t.Skipf("%s not found", name)
	return ""
}

// clientEnv is a minimal environment for libpq tools: nothing from the
// test process's PG* variables.
func clientEnv(extra ...string) []string {
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.TempDir(), "PGCONNECT_TIMEOUT=20", "PGTZ=UTC"}
	return append(env, extra...)
}

// psql runs psql against the proxy with args and returns its output.
func (h *harness) psql(ctx context.Context, env []string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, pgBin(h.t, "psql"), append([]string{"-X", "-A", "-t", "-v", "ON_ERROR_STOP=1",
		"-h", "127.0.0.1", "-p", fmt.Sprint(h.port), "-U", h.role(), "-d", h.e.Database()}, args...)...)
	cmd.Env = clientEnv(env...)
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// interactive is a psql process fed statements on stdin.
type interactive struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string
}

func (h *harness) startPsql(t testing.TB) *interactive {
	t.Helper()
	cmd := exec.Command(pgBin(t, "psql"), "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1",
		"-h", "127.0.0.1", "-p", fmt.Sprint(h.port), "-U", h.role(), "-d", h.e.Database())
	cmd.Env = clientEnv()
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &interactive{cmd: cmd, stdin: stdin, lines: make(chan string, 100)}
	go func() {
		defer close(p.lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			p.lines <- sc.Text()
		}
	}()
	t.Cleanup(func() {
		_ = stdin.Close()
		_ = cmd.Wait()
	})
	return p
}

// ask sends one statement and returns psql's one-line answer.
func (p *interactive) ask(t testing.TB, stmt string) string {
	t.Helper()
	if _, err := io.WriteString(p.stdin, stmt+"\n"); err != nil {
		t.Fatalf("psql stdin: %v", err)
	}
	select {
	case l, ok := <-p.lines:
		if !ok {
			t.Fatalf("psql exited before answering %q", stmt)
		}
		return l
	case <-time.After(20 * time.Second):
		t.Fatalf("psql did not answer %q", stmt)
	}
	return ""
}

// pgCode returns err's SQLSTATE, or "".
func pgCode(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

// noSecret fails if s contains an emulator token or the given secrets.
func noSecret(t testing.TB, what, s string, secrets ...string) {
	t.Helper()
	if strings.Contains(s, "lbt_") || strings.Contains(s, "eyJ") {
		t.Errorf("%s contains a token: %q", what, s)
	}
	for _, sec := range secrets {
		if sec != "" && strings.Contains(s, sec) {
			t.Errorf("%s contains a secret", what)
		}
	}
}
