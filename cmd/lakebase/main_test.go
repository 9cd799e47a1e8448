package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/goleak"

	"github.com/lakebase-go/lakebase/internal/leaktest"
	"github.com/lakebase-go/lakebase/lakebasetest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binPath != "" {
		_ = os.RemoveAll(filepath.Dir(binPath))
	}
	if code == 0 {
		if err := goleak.Find(leaktest.Options()...); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// envVars are every variable the command (the connector, the SDK, libpq
// conventions) reads; tests start from none of them.
var envVars = []string{
	"DATABRICKS_HOST", "DATABRICKS_TOKEN", "DATABRICKS_CLIENT_ID", "DATABRICKS_CLIENT_SECRET", "DATABRICKS_CONFIG_PROFILE",
	"DATABRICKS_CONFIG_FILE", "DATABRICKS_AUTH_TYPE", "LAKEBASE_ENDPOINT", "LAKEBASE_INSTANCE", "PGHOST", "PGPORT", "PGDATABASE",
	"PGUSER", "PGSSLMODE", "PGSSLROOTCERT", "PGAPPNAME", "PGCONNECT_TIMEOUT", "PGPASSWORD", "PGOPTIONS", "PGSERVICE", "PGTZ",
}

// setEnv replaces the test's environment with env (restored afterwards).
// HOME points at an empty directory so no ~/.databrickscfg is read.
func setEnv(t *testing.T, env map[string]string) {
	t.Helper()
	for _, k := range envVars {
		t.Setenv(k, "")
		_ = os.Unsetenv(k)
	}
	home := t.TempDir()
	t.Setenv("HOME", home)
	t.Setenv("DATABRICKS_CONFIG_FILE", filepath.Join(home, "no-such-databrickscfg"))
	for k, v := range env {
		t.Setenv(k, v)
	}
}

// syncBuffer is a bytes.Buffer safe for a goroutine writing and a test
// reading.
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

// lakebase runs the command in-process.
func lakebase(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut syncBuffer
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	code = run(ctx, args, &out, &errOut)
	return code, out.String(), errOut.String()
}

// noToken fails if s contains an emulator token.
func noToken(t *testing.T, what, s string) {
	t.Helper()
	if strings.Contains(s, "lbt_") || strings.Contains(s, "eyJ") {
		t.Errorf("%s contains a token:\n%s", what, s)
	}
}

// loginWith logs in to the emulator directly with password.
func loginWith(t *testing.T, e *lakebasetest.Emulator, role, password string) error {
	t.Helper()
	cfg, err := pgx.ParseConfig(fmt.Sprintf("host=%s port=%d dbname=%s user=%s sslmode=verify-full sslrootcert='%s'", e.Host(), e.Port(), e.Database(), role, e.CAFile()))
	if err != nil {
		return err
	}
	cfg.Password = password
	c, err := pgx.ConnectConfig(t.Context(), cfg)
	if err != nil {
		return err
	}
	return c.Close(context.Background())
}

func TestHelp(t *testing.T) {
	setEnv(t, nil)
	code, out, _ := lakebase(t, "--help")
	if code != 0 || !strings.Contains(out, "Commands:") {
		t.Errorf("--help: %d\n%s", code, out)
	}
	for _, c := range commands() {
		if !strings.Contains(out, c.name) {
			t.Errorf("--help does not list %s", c.name)
		}
		for _, args := range [][]string{{c.name, "--help"}, {c.name, "-h"}, {"help", c.name}} {
			code, out, errOut := lakebase(t, args...)
			if code != 0 || !strings.Contains(out, "Usage: lakebase "+c.name) || !strings.Contains(out, "-endpoint") || errOut != "" {
				t.Errorf("%v: %d\n%s\n%s", args, code, out, errOut)
			}
		}
	}
	code, _, errOut := lakebase(t, "proxy", "--help")
	_ = errOut
	if code != 0 {
		t.Error("proxy --help failed")
	}
	_, out, _ = lakebase(t, "proxy", "--help")
	for _, flag := range []string{"-listen", "-unix-socket", "-allow-non-loopback", "-client-password-file", "-user-any", "-max-connections",
		"-shutdown-grace", "-http-address", "-token-early-refresh", "-token-safety-margin", "-log-format", "-tls-self-signed", "What it trusts"} {
		if !strings.Contains(out, flag) {
			t.Errorf("proxy --help lacks %s", flag)
		}
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "Usage: lakebase <command>"},
		{[]string{"frobnicate"}, `unknown command "frobnicate"`},
		{[]string{"token", "--no-such-flag"}, "flag provided but not defined"},
		{[]string{"token", "stray"}, `unexpected argument "stray"`},
		{[]string{"token", "--token-safety-margin", "-1s"}, "negative duration"},
		{[]string{"env", "--endpoint", "projects/a/branches/b/endpoints/c", "--instance", "i"}, "both set"},
		{[]string{"proxy", "--log-format", "xml"}, "--log-format"},
		{[]string{"proxy", "--tls-cert", "x.pem"}, "--tls-key go together"},
	} {
		code, _, errOut := lakebase(t, tc.args...)
		if code != exitUsage || !strings.Contains(errOut, tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want 2 and %q", tc.args, code, errOut, tc.want)
		}
	}
}

func TestToken(t *testing.T) {
	e := lakebasetest.Start(t)
	setEnv(t, e.Env())
	code, out, errOut := lakebase(t, "token")
	if code != 0 {
		t.Fatalf("token: %d %s", code, errOut)
	}
	tok := strings.TrimSuffix(out, "\n")
	if strings.Contains(tok, "\n") || !strings.Contains(tok, "lbt_") {
		t.Fatalf("token output is not one token line: %q", out)
	}
	if err := loginWith(t, e, e.ServicePrincipal(), tok); err != nil {
		t.Errorf("the printed token does not log in: %v", err)
	}
	noToken(t, "stderr", errOut)

	code, out, errOut = lakebase(t, "token", "--json")
	var got struct{ Token, Expiry, Role string }
	if code != 0 || json.Unmarshal([]byte(out), &got) != nil {
		t.Fatalf("token --json: %d %q %s", code, out, errOut)
	}
	exp, err := time.Parse(time.RFC3339, got.Expiry)
	if err != nil || time.Until(exp) < 50*time.Minute || got.Role != e.ServicePrincipal() || loginWith(t, e, got.Role, got.Token) != nil {
		t.Errorf("token --json: %+v (%v)", got, err)
	}

	// --profile instead of the environment.
	cfgFile := filepath.Join(t.TempDir(), "databrickscfg")
	if err := os.WriteFile(cfgFile, []byte(fmt.Sprintf("[emu]\nhost = %s\ntoken = %s\n", e.WorkspaceURL(), e.ServicePrincipalToken())), 0o600); err != nil {
		t.Fatal(err)
	}
	env := e.Env()
	delete(env, "DATABRICKS_HOST")
	delete(env, "DATABRICKS_TOKEN")
	setEnv(t, env)
	t.Setenv("DATABRICKS_CONFIG_FILE", cfgFile)
	code, out, errOut = lakebase(t, "token", "--profile", "emu")
	if code != 0 || loginWith(t, e, e.ServicePrincipal(), strings.TrimSpace(out)) != nil {
		t.Errorf("token --profile: %d %s", code, errOut)
	}
	code, _, errOut = lakebase(t, "token", "--profile", "missing")
	if code != 1 || !strings.Contains(errOut, "no missing profile configured") {
		t.Errorf("token --profile missing: %d %s", code, errOut)
	}
}

// TestTokenFlags: 3-second tokens need --token-safety-margin (the default
// 30 s margin refuses them).
func TestTokenFlags(t *testing.T) {
	e := lakebasetest.Start(t, lakebasetest.WithTTL(3*time.Second))
	setEnv(t, e.Env())
	code, _, errOut := lakebase(t, "token")
	if code != 1 || errOut == "" {
		t.Errorf("a 3 s token with the default safety margin: %d %q, want a refusal", code, errOut)
	}
	noToken(t, "stderr", errOut)
	code, out, errOut := lakebase(t, "token", "--token-safety-margin", "500ms", "--token-early-refresh", "1s")
	if code != 0 || loginWith(t, e, e.ServicePrincipal(), strings.TrimSpace(out)) != nil {
		t.Errorf("with --token-safety-margin: %d %s", code, errOut)
	}
}

func TestEnv(t *testing.T) {
	e := lakebasetest.Start(t)
	setEnv(t, e.Env())
	code, out, errOut := lakebase(t, "env")
	if code != 0 {
		t.Fatalf("env: %d %s", code, errOut)
	}
	want := fmt.Sprintf("export PGDATABASE='%s'\nexport PGHOST='localhost'\nexport PGPORT='%d'\nexport PGSSLMODE='verify-full'\nexport PGSSLROOTCERT='%s'\nexport PGUSER='%s'\n",
		e.Database(), e.Port(), e.CAFile(), e.ServicePrincipal())
	if out != want {
		t.Errorf("env:\n%s\nwant:\n%s", out, want)
	}
	code, out, _ = lakebase(t, "env", "--with-password", "--database", "postgres")
	if code != 0 || !strings.Contains(out, "export PGPASSWORD='") || !strings.Contains(out, "export PGDATABASE='postgres'") {
		t.Fatalf("env --with-password: %d\n%s", code, out)
	}
	// The lines work in a shell with libpq.
	script := filepath.Join(t.TempDir(), "env.sh")
	if err := os.WriteFile(script, []byte(out), 0o600); err != nil {
		t.Fatal(err)
	}
	psql := "/usr/lib/postgresql/15/bin/psql"
	if _, err := os.Stat(psql); err != nil {
		psql = "psql"
	}
	cmd := exec.CommandContext(t.Context(), "sh", "-c", `. "$1" && "$2" -X -A -t -c 'select current_user'`, "sh", script, psql)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}
	res, err := cmd.CombinedOutput()
	if err != nil || strings.TrimSpace(string(res)) != e.ServicePrincipal() {
		t.Errorf("psql with the exported settings: %v\n%s", err, res)
	}
}
