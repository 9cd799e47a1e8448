package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/lakebase-go/lakebase/lakebasetest"
)

// logged waits for a JSON log line with msg and returns its address.
func logged(t *testing.T, logs func() string, msg string) string {
	t.Helper()
	var addr string
	eventually(t, 30*time.Second, "log line "+msg, func() bool {
		for _, l := range strings.Split(logs(), "\n") {
			var m map[string]any
			if json.Unmarshal([]byte(l), &m) == nil && m["msg"] == msg {
				addr, _ = m["address"].(string)
				return true
			}
		}
		return false
	})
	return addr
}

func getJSON(t *testing.T, url string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	var m map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&m)
	return resp.StatusCode, m
}

// listenAddr waits for the proxy's "listening" log line (JSON) in logs
// and returns the TCP address.
func listenAddr(t *testing.T, logs func() string) string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		for _, l := range strings.Split(logs(), "\n") {
			var m map[string]any
			if json.Unmarshal([]byte(l), &m) == nil && m["msg"] == "proxy: listening" && m["network"] == "tcp" {
				return m["address"].(string)
			}
		}
		tm := time.NewTimer(20 * time.Millisecond)
		<-tm.C
	}
	t.Fatalf("the proxy did not start listening:\n%s", logs())
	return ""
}

func pgxVia(t *testing.T, addr, role, db string) *pgx.Conn {
	t.Helper()
	host, port, _ := net.SplitHostPort(addr)
	c, err := pgx.Connect(t.Context(), fmt.Sprintf("host=%s port=%s user=%s dbname=%s sslmode=disable", host, port, role, db))
	if err != nil {
		t.Fatalf("connect through the proxy at %s: %v", addr, err)
	}
	return c
}

// TestProxyCommand runs `lakebase proxy` in-process with the environment
// a Databricks App has (OAuth M2M, the front door): a client logs in,
// the health endpoint answers, a unix socket works, and cancelling the
// command's context shuts it down with exit status 0.
func TestProxyCommand(t *testing.T) {
	e := lakebasetest.Start(t)
	setEnv(t, e.AppEnv())
	sock := t.TempDir()
	var stderr syncBuffer
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	codec := make(chan int, 1)
	go func() {
		codec <- run(ctx, []string{"proxy", "--listen", "127.0.0.1:0", "--unix-socket", sock, "--http-address", "127.0.0.1:0", "--log-format", "json"}, io.Discard, &stderr)
	}()
	addr := listenAddr(t, stderr.String)
	c := pgxVia(t, addr, e.ServicePrincipal(), e.Database())
	var who, app string
	if err := c.QueryRow(t.Context(), "select current_user, current_setting('application_name')").Scan(&who, &app); err != nil || who != e.ServicePrincipal() {
		t.Errorf("current_user %q, %v", who, err)
	}
	if app != lakebasetest.AppName {
		t.Errorf("application_name %q, want PGAPPNAME's %q (the client sent none)", app, lakebasetest.AppName)
	}
	_ = c.Close(t.Context())
	if code, body := getJSON(t, "http://"+logged(t, stderr.String, "proxy: health endpoints")+"/readyz"); code != http.StatusOK || body["status"] != "ok" || body["total"] != float64(1) || body["last_login"] != "ok" {
		t.Errorf("readyz: %d %v", code, body)
	}
	// psql finds the socket by directory and port.
	_, port, _ := net.SplitHostPort(addr)
	psql := "/usr/lib/postgresql/15/bin/psql"
	if _, err := os.Stat(psql); err != nil {
		psql = "psql"
	}
	cmd := exec.CommandContext(t.Context(), psql, "-X", "-A", "-t", "-h", sock, "-p", port, "-U", e.ServicePrincipal(), "-d", e.Database(), "-c", "select 'via socket'")
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}
	if out, err := cmd.CombinedOutput(); err != nil || strings.TrimSpace(string(out)) != "via socket" {
		t.Errorf("psql over %s/.s.PGSQL.%s: %v\n%s", sock, port, err, out)
	}
	cancel()
	select {
	case code := <-codec:
		if code != 0 {
			t.Errorf("exit %d after the shutdown\n%s", code, stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the command did not return after its context ended")
	}
	if _, err := os.Stat(filepath.Join(sock, ".s.PGSQL."+port)); !os.IsNotExist(err) {
		t.Errorf("the unix socket was not removed: %v", err)
	}
	for _, want := range []string{`"msg":"proxy: session open"`, `"msg":"proxy: session close"`, `"msg":"lakebase proxy: stopped"`} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("logs lack %s", want)
		}
	}
	noToken(t, "logs", stderr.String())
}

// TestProxyCommandRefusals: the start-up refuses what cannot be safe.
func TestProxyCommandRefusals(t *testing.T) {
	e := lakebasetest.Start(t)
	setEnv(t, e.Env())
	pwFile := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pwFile, []byte("s3cret-for-clients\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(t.TempDir(), "empty")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--listen", "0.0.0.0:0"}, 1, "--allow-non-loopback"},
		{[]string{"--listen", "0.0.0.0:0", "--allow-non-loopback"}, 1, "--client-password-file"},
		{[]string{"--client-password-file", empty}, 2, "is empty"},
		{[]string{"--client-password-file", filepath.Join(t.TempDir(), "missing")}, 2, "--client-password-file"},
		{[]string{"--max-connections", "0"}, 2, "--max-connections"},
	} {
		code, _, errOut := lakebase(t, append([]string{"proxy", "--listen", "127.0.0.1:0"}, tc.args...)...)
		if code != tc.code || !strings.Contains(errOut, tc.want) {
			t.Errorf("%v: exit %d, %q; want %d naming %s", tc.args, code, errOut, tc.code, tc.want)
		}
		if strings.Contains(errOut, "s3cret") {
			t.Error("the client password was printed")
		}
	}
	if n := e.Calls(lakebasetest.RouteCredentials); n != 0 {
		t.Errorf("refused starts minted %d credentials", n)
	}
}

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// binary builds the command once per test run.
func binary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "lakebase-bin-*")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "lakebase")
		args := []string{"build", "-o", binPath}
		if raceBuild {
			args = append(args, "-race")
		}
		out, err := exec.Command("go", append(args, ".")...).CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// startBinary starts the built command with env and args; stderr is
// collected.
func startBinary(t *testing.T, env map[string]string, args ...string) (*exec.Cmd, *syncBuffer) {
	t.Helper()
	cmd := exec.Command(binary(t), args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(), "DATABRICKS_CONFIG_FILE=" + filepath.Join(t.TempDir(), "none")}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	var stderr syncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	return cmd, &stderr
}

// waitExit waits at most d for cmd and returns its exit code.
func waitExit(t *testing.T, cmd *exec.Cmd, d time.Duration) int {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
		return cmd.ProcessState.ExitCode()
	case <-time.After(d):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("the process did not exit within %v", d)
	}
	return -1
}

// TestBinarySIGTERM builds the command and sends SIGTERM to a proxy with
// sessions open: they finish within the grace period and the process
// exits 0; sessions still open at the end of the grace are closed and the
// process still exits 0; a second signal closes at once.
func TestBinarySIGTERM(t *testing.T) {
	e := lakebasetest.Start(t)
	env := e.Env()

	t.Run("sessions finish within the grace", func(t *testing.T) {
		cmd, stderr := startBinary(t, env, "proxy", "--listen", "127.0.0.1:0", "--log-format", "json", "--shutdown-grace", "30s", "--http-address", "127.0.0.1:0")
		addr := listenAddr(t, stderr.String)
		a := pgxVia(t, addr, e.ServicePrincipal(), e.Database())
		b := pgxVia(t, addr, e.ServicePrincipal(), e.Database())
		if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		eventually(t, 10*time.Second, "shutdown started", func() bool { return strings.Contains(stderr.String(), "shutting down") })
		// New clients are refused, open sessions go on.
		host, port, _ := net.SplitHostPort(addr)
		if _, err := pgx.Connect(t.Context(), fmt.Sprintf("host=%s port=%s user=%s sslmode=disable connect_timeout=5", host, port, e.ServicePrincipal())); err == nil {
			t.Error("a new client was accepted after SIGTERM")
		}
		for i, c := range []*pgx.Conn{a, b} {
			var n int
			if err := c.QueryRow(t.Context(), "select $1::int * 2", i+1).Scan(&n); err != nil || n != 2*(i+1) {
				t.Errorf("session %d during the grace period: %d, %v", i, n, err)
			}
		}
		start := time.Now()
		_ = a.Close(t.Context())
		_ = b.Close(t.Context())
		if code := waitExit(t, cmd, 20*time.Second); code != 0 {
			t.Errorf("exit status %d, want 0\n%s", code, stderr.String())
		}
		if d := time.Since(start); d > 10*time.Second {
			t.Errorf("exited %v after the last session ended, want promptly", d)
		}
		if !strings.Contains(stderr.String(), "every session ended within the grace period") {
			t.Errorf("logs:\n%s", stderr.String())
		}
		noToken(t, "logs", stderr.String())
	})

	t.Run("sessions past the grace are closed, exit 0", func(t *testing.T) {
		cmd, stderr := startBinary(t, env, "proxy", "--listen", "127.0.0.1:0", "--log-format", "json", "--shutdown-grace", "500ms")
		addr := listenAddr(t, stderr.String)
		a := pgxVia(t, addr, e.ServicePrincipal(), e.Database())
		defer a.Close(context.Background())
		_ = cmd.Process.Signal(syscall.SIGTERM)
		if code := waitExit(t, cmd, 20*time.Second); code != 0 {
			t.Errorf("exit status %d, want 0\n%s", code, stderr.String())
		}
		var n int
		if err := a.QueryRow(t.Context(), "select 1").Scan(&n); err == nil {
			t.Error("a session outlived the proxy")
		}
	})

	t.Run("a second signal closes at once", func(t *testing.T) {
		cmd, stderr := startBinary(t, env, "proxy", "--listen", "127.0.0.1:0", "--log-format", "json", "--shutdown-grace", "1h")
		addr := listenAddr(t, stderr.String)
		a := pgxVia(t, addr, e.ServicePrincipal(), e.Database())
		defer a.Close(context.Background())
		_ = cmd.Process.Signal(syscall.SIGINT)
		eventually(t, 10*time.Second, "shutdown started", func() bool { return strings.Contains(stderr.String(), "shutting down") })
		_ = cmd.Process.Signal(syscall.SIGTERM)
		if code := waitExit(t, cmd, 20*time.Second); code != 0 {
			t.Errorf("exit status %d, want 0\n%s", code, stderr.String())
		}
	})
}

// eventually polls cond every 20 ms until it holds or d passes.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
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
