package connector

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lakebase-go/lakebase/internal/sdkclient"
	"github.com/lakebase-go/lakebase/lakebasetest"
	"github.com/lakebase-go/lakebase/tokensource"
)

var (
	refusingURL = func(t *testing.T) string { return lakebasetest.RefusingWorkspaceURL(t) }
	silentURL   = func(t *testing.T) string { return lakebasetest.SilentWorkspaceURL(t) }
)

// isolateSDK keeps the SDK from reading this machine's profiles or
// credentials, and clears every variable a test might inherit.
func isolateSDK(t *testing.T) {
	t.Helper()
	home := t.TempDir()
	t.Setenv("HOME", home)
	t.Setenv("DATABRICKS_CONFIG_FILE", filepath.Join(home, "nonexistent.cfg"))
	for _, k := range []string{"DATABRICKS_HOST", "DATABRICKS_TOKEN", "DATABRICKS_CLIENT_ID", "DATABRICKS_CLIENT_SECRET",
		"DATABRICKS_CONFIG_PROFILE", "DATABRICKS_AUTH_TYPE", "PGHOST", "PGUSER", "PGPORT", "PGSSLMODE", "PGSSLROOTCERT",
		"LAKEBASE_ENDPOINT", "LAKEBASE_INSTANCE", "PGDATABASE", "PGAPPNAME", "PGCONNECT_TIMEOUT"} {
		t.Setenv(k, "")
		os.Unsetenv(k)
	}
}

// TestStartupBoundedByContext: a workspace that cannot be reached ends New
// within its ctx with a *ConfigError naming DATABRICKS_HOST.
func TestStartupBoundedByContext(t *testing.T) {
	const budget = 2 * time.Second
	cases := []struct {
		name string
		host func(t *testing.T) string
	}{
		{"refusing", refusingURL},
		{"silent", silentURL},
		{"nonexistent", func(*testing.T) string { return "https://nonexistent.invalid" }},
		{"missing", func(*testing.T) string { return "" }},
	}
	cases = append(cases,
		struct {
			name string
			host func(t *testing.T) string
		}{"refusing, OAuth M2M", refusingURL},
		struct {
			name string
			host func(t *testing.T) string
		}{"silent, OAuth M2M", silentURL})
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			isolateSDK(t)
			if h := tc.host(t); h != "" {
				t.Setenv("DATABRICKS_HOST", h)
				if strings.HasSuffix(tc.name, "M2M") { // what a Databricks App gets
					t.Setenv("DATABRICKS_CLIENT_ID", "app-client-id")
					t.Setenv("DATABRICKS_CLIENT_SECRET", "app-secret")
				} else {
					t.Setenv("DATABRICKS_TOKEN", "dapi-test-token")
				}
			}
			t.Setenv("LAKEBASE_ENDPOINT", "projects/p/branches/b/endpoints/e")
			ctx, cancel := context.WithTimeout(t.Context(), budget)
			defer cancel()
			start := time.Now()
			c, err := New(ctx, Config{Logger: slog.New(slog.DiscardHandler)})
			took := time.Since(start)
			t.Logf("%s: %v after %v", tc.name, err, took.Round(time.Millisecond))
			if err == nil {
				c.Close()
				t.Fatal("New succeeded")
			}
			if took > budget+500*time.Millisecond {
				t.Errorf("New took %v with a %v ctx", took, budget)
			}
			var ce *ConfigError
			if !errors.As(err, &ce) || !strings.Contains(ce.Setting, "DATABRICKS_HOST") {
				t.Errorf("want a *ConfigError naming DATABRICKS_HOST, got %T %v", err, err)
			}
			if tokensource.IsTransient(err) {
				t.Errorf("IsTransient says yes for a configuration error (README: retry does not help): %v", err)
			}
			if strings.Contains(err.Error(), "PGHOST") && !strings.Contains(err.Error(), "Config.Host/PGHOST") {
				t.Errorf("error blames PGHOST: %v", err)
			}
			if strings.Count(err.Error(), "(fix:") != 1 {
				t.Errorf("want exactly one fix in %q", err)
			}
		})
	}
}

// TestHostAndUserGivenNoNetworkAtNew: with PGHOST and PGUSER, New makes no
// network call even with an unreachable workspace; the first connection
// fails within its ctx, naming the workspace, and nothing is left running.
func TestHostAndUserGivenNoNetworkAtNew(t *testing.T) {
	isolateSDK(t)
	t.Setenv("DATABRICKS_HOST", refusingURL(t))
	t.Setenv("DATABRICKS_TOKEN", "dapi-test-token")
	t.Setenv("LAKEBASE_ENDPOINT", "projects/p/branches/b/endpoints/e")
	t.Setenv("PGHOST", "127.0.0.1")
	t.Setenv("PGUSER", "someone@example.com")
	start := time.Now()
	c, err := New(t.Context(), Config{Logger: slog.New(slog.DiscardHandler), Token: tokensource.Options{Mode: tokensource.Lazy}})
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 500*time.Millisecond {
		t.Errorf("New took %v with Host and User given", took)
	}
	db := OpenDB(c)
	defer db.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	start = time.Now()
	err = db.PingContext(ctx)
	if err == nil {
		t.Fatal("ping succeeded")
	}
	if took := time.Since(start); took > 2500*time.Millisecond {
		t.Errorf("ping took %v with a 2 s ctx", took)
	}
	if !strings.Contains(err.Error(), "DATABRICKS_HOST") && !strings.Contains(err.Error(), "workspace") {
		t.Errorf("the error does not point at the workspace: %v", err)
	}
}

// TestLocalSettingsCheckedBeforeNetwork: bad TLS settings fail New at once,
// before the (silent) workspace is contacted.
func TestLocalSettingsCheckedBeforeNetwork(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "ca.txt")
	if err := os.WriteFile(notPEM, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, key, value, setting string
	}{
		{"bad sslmode", "PGSSLMODE", "allow", "PGSSLMODE"},
		{"unknown sslmode", "PGSSLMODE", "sometimes", "PGSSLMODE"},
		{"missing root cert", "PGSSLROOTCERT", filepath.Join(dir, "missing.pem"), "PGSSLROOTCERT"},
		{"root cert not PEM", "PGSSLROOTCERT", notPEM, "PGSSLROOTCERT"},
		{"bad endpoint", "LAKEBASE_ENDPOINT", "my-endpoint", "LAKEBASE_ENDPOINT"},
		{"bad port", "PGPORT", "54x", "PGPORT"},
		{"pooler host", "PGHOST", "ep-quiet-1-pooler.database.cloud.databricks.com", "PGHOST"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			isolateSDK(t)
			t.Setenv("DATABRICKS_HOST", silentURL(t))
			t.Setenv("DATABRICKS_TOKEN", "dapi-test-token")
			t.Setenv("LAKEBASE_ENDPOINT", "projects/p/branches/b/endpoints/e")
			t.Setenv(tc.key, tc.value)
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			defer cancel()
			start := time.Now()
			_, err := New(ctx, Config{Logger: slog.New(slog.DiscardHandler)})
			if took := time.Since(start); took > time.Second {
				t.Errorf("New took %v: the network was consulted before local settings", took)
			}
			var ce *ConfigError
			if !errors.As(err, &ce) || !strings.Contains(ce.Setting, tc.setting) {
				t.Fatalf("want a *ConfigError naming %s, got %T %v", tc.setting, err, err)
			}
			if strings.Count(err.Error(), "(fix:") != 1 {
				t.Errorf("want exactly one fix in %q", err)
			}
			if err := (Config{}).Validate(); err == nil {
				t.Error("Config.Validate accepted the same settings")
			}
		})
	}
}

// TestWrongStaticPasswordSaysPassword: a refused static password is not
// described as a token problem.
func TestWrongStaticPasswordSaysPassword(t *testing.T) {
	e := lakebasetest.Start(t)
	cfg := baseConfig(t, e, nil)
	cfg.User = "lakebase_admin"
	cfg.Password = "wrong-password-hunter2"
	cfg.Workspace = nil
	calls := e.Calls(lakebasetest.RouteCredentials)
	c := mustNew(t, cfg)
	db := sql.OpenDB(c)
	defer db.Close()
	err := db.PingContext(t.Context())
	var le *LoginError
	if !errors.As(err, &le) || le.Reason != LoginPasswordRefused {
		t.Fatalf("want a *LoginError with LoginPasswordRefused, got %T %v", err, err)
	}
	msg := err.Error()
	if !strings.Contains(msg, "password refused for role") || strings.Contains(msg, "token") || strings.Contains(msg, "hunter2") {
		t.Errorf("message: %s", msg)
	}
	if got := e.Calls(lakebasetest.RouteCredentials) - calls; got != 0 {
		t.Errorf("credential calls = %d, want 0", got)
	}
}

// TestPlaintextAgainstTLSOnlyServer: sslmode=disable against a server that
// requires TLS is an access-rule refusal pointing at sslmode, and mints
// nothing beyond the first token.
func TestPlaintextAgainstTLSOnlyServer(t *testing.T) {
	e := lakebasetest.Start(t)
	cfg := baseConfig(t, e, nil)
	cfg.SSLMode = "disable"
	c := mustNew(t, cfg)
	db := sql.OpenDB(c)
	defer db.Close()
	if err := db.PingContext(t.Context()); err == nil {
		t.Fatal("a plaintext login to a TLS-only server succeeded")
	}
	before := e.Calls(lakebasetest.RouteCredentials)
	err := db.PingContext(t.Context())
	var le *LoginError
	if !errors.As(err, &le) || le.Reason != LoginNotAllowed {
		t.Fatalf("want a *LoginError with LoginNotAllowed, got %T %v", err, err)
	}
	if !strings.Contains(err.Error(), "SSLMode") || strings.Contains(err.Error(), "databricks_create_role") {
		t.Errorf("message does not point at sslmode: %v", err)
	}
	if got := e.Calls(lakebasetest.RouteCredentials) - before; got != 0 {
		t.Errorf("credential calls = %d for an access-rule refusal, want 0", got)
	}
}

// TestSecretsNeverFormatted: every way of printing a Config or DSN hides
// the password.
func TestSecretsNeverFormatted(t *testing.T) {
	const secret = "hunter2-s3cr3t"
	cfg := Config{Host: "h", User: "u", Password: secret}
	var buf strings.Builder
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("cfg", "config", cfg)
	js, _ := json.Marshal(cfg)
	for _, s := range []string{fmt.Sprintf("%v", cfg), fmt.Sprintf("%+v", cfg), fmt.Sprintf("%#v", cfg), fmt.Sprintf("%s", cfg),
		fmt.Sprintf("%v", &cfg), fmt.Sprint(cfg), buf.String(), string(js)} {
		if strings.Contains(s, secret) {
			t.Errorf("password printed: %s", s)
		}
		if !strings.Contains(s, "h") {
			t.Errorf("settings not printed: %s", s)
		}
	}
}

// TestPgxReadsNoProcessEnvironment: with LookupEnv set, run-time parameters
// and service settings of the process environment do not reach pgx.
func TestPgxReadsNoProcessEnvironment(t *testing.T) {
	e := lakebasetest.Start(t)
	t.Setenv("PGOPTIONS", "-c search_path=evil")
	t.Setenv("PGTZ", "Pacific/Kiritimati")
	t.Setenv("PGSERVICE", "no-such-service")
	t.Setenv("PGTARGETSESSIONATTRS", "standby")
	t.Setenv("PGSSLCERT", "/nonexistent/cert.pem")
	c := mustNew(t, baseConfig(t, e, nil))
	db := sql.OpenDB(c)
	defer db.Close()
	var tz, sp string
	if err := db.QueryRowContext(t.Context(), "SELECT current_setting('TimeZone'), current_setting('search_path')").Scan(&tz, &sp); err != nil {
		t.Fatal(err)
	}
	if tz == "Pacific/Kiritimati" || strings.Contains(sp, "evil") {
		t.Errorf("process environment leaked into the session: TimeZone=%q search_path=%q", tz, sp)
	}
	// Through LookupEnv the same variables do apply.
	cfg := baseConfig(t, e, nil)
	cfg.LookupEnv = envMap(map[string]string{"PGTZ": "Pacific/Kiritimati"})
	c2 := mustNew(t, cfg)
	db2 := sql.OpenDB(c2)
	defer db2.Close()
	if err := db2.QueryRowContext(t.Context(), "SELECT current_setting('TimeZone')").Scan(&tz); err != nil {
		t.Fatal(err)
	}
	if tz != "Pacific/Kiritimati" {
		t.Errorf("PGTZ through LookupEnv: TimeZone=%q", tz)
	}
}

// TestClosedOnEveryPath: after Close, Connect and BeforeConnect report
// tokensource.ErrClosed.
func TestClosedOnEveryPath(t *testing.T) {
	e := lakebasetest.Start(t)
	c := mustNew(t, baseConfig(t, e, nil))
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Connect(t.Context()); !errors.Is(err, tokensource.ErrClosed) {
		t.Errorf("Connect after Close: %v", err)
	}
	pc, err := c.PoolConfig()
	if err != nil {
		t.Fatal(err)
	}
	if err := pc.BeforeConnect(t.Context(), pc.ConnConfig.Copy()); !errors.Is(err, tokensource.ErrClosed) {
		t.Errorf("BeforeConnect after Close: %v", err)
	}
}

// TestOnCloseRunsOutsideLock: an onClose callback may call the connector.
func TestOnCloseRunsOutsideLock(t *testing.T) {
	e := lakebasetest.Start(t)
	c := mustNew(t, baseConfig(t, e, nil))
	ran := make(chan struct{})
	c.onClose(func() error {
		c.onClose(func() error { return nil }) // would deadlock under the lock
		_ = c.Close()
		close(ran)
		return nil
	})
	done := make(chan error, 1)
	go func() { done <- c.Close() }()
	select {
	case <-ran:
	case <-time.After(10 * time.Second):
		t.Fatal("onClose callback deadlocked")
	}
	<-done
}

// TestLookupErrorsScrubbed: a workspace answering the host look-up with a
// body that holds a token never puts it into New's error.
func TestLookupErrorsScrubbed(t *testing.T) {
	const secret = "eyJhbGciOiJSUzI1NiJ9.c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0.LEAKED_SIGNATURE"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusBadGateway)
		_, _ = io.WriteString(w, "<html>upstream token="+secret+"</html>")
	}))
	defer srv.Close()
	_, err := New(t.Context(), Config{Endpoint: "projects/p/branches/b/endpoints/e", User: "u", WorkspaceConfig: sdkclient.PATConfig(srv.URL, "dapi-test", nil),
		Logger: slog.New(slog.DiscardHandler), LookupEnv: envMap(nil)})
	var ce *ConfigError
	if !errors.As(err, &ce) {
		t.Fatalf("want a *ConfigError, got %v", err)
	}
	for _, s := range []string{err.Error(), fmt.Sprintf("%+v", err)} {
		if strings.Contains(s, "LEAKED_SIGNATURE") || strings.Contains(s, "c2VjcmV0c2VjcmV0") {
			t.Fatalf("the look-up error leaks the body's token: %s", s)
		}
	}
}
