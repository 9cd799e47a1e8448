package connector

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/databricks/databricks-sdk-go"
	"github.com/databricks/databricks-sdk-go/config"
	"github.com/databricks/databricks-sdk-go/service/database"
	"github.com/databricks/databricks-sdk-go/service/iam"
	"github.com/databricks/databricks-sdk-go/service/postgres"
	"go.uber.org/goleak"

	"github.com/lakebase-go/lakebase/internal/leaktest"
	"github.com/lakebase-go/lakebase/internal/sdkclient"
	"github.com/lakebase-go/lakebase/lakebasetest"
	"github.com/lakebase-go/lakebase/tokensource"
)

// holdListener accepts TCP connections and never answers, counting them:
// a workspace that hangs.
type holdListener struct {
	ln       net.Listener
	accepted atomic.Int64
	mu       sync.Mutex
	conns    []net.Conn
}

func newHoldListener(t *testing.T) *holdListener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := &holdListener{ln: ln}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			h.accepted.Add(1)
			h.mu.Lock()
			h.conns = append(h.conns, c)
			h.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
		h.mu.Lock()
		defer h.mu.Unlock()
		for _, c := range h.conns {
			c.Close()
		}
	})
	return h
}

func (h *holdListener) URL() string { return "http://" + h.ln.Addr().String() }

// TestCloseDuringHungLazyBuild: with Host and User given the default
// workspace client is built by the first fetch. Against a workspace that
// never answers, db.Close returns at once (it used to wait for the attempt
// timeout, holding a lock), the waiting Ping gets ErrClosed, nothing is
// built or dialled after Close, and no goroutine is left.
func TestCloseDuringHungLazyBuild(t *testing.T) {
	for _, mode := range []tokensource.Mode{tokensource.Lazy, tokensource.Eager} {
		t.Run(mode.String(), func(t *testing.T) {
			isolateSDK(t)
			hung := newHoldListener(t)
			c, err := New(t.Context(), Config{
				Host: "127.0.0.1", User: "app", Endpoint: "projects/p/branches/b/endpoints/e",
				WorkspaceConfig: &config.Config{Host: hung.URL(), Token: "dapi-test"},
				Token:           tokensource.Options{Mode: mode, AttemptTimeout: 10 * time.Second},
				Logger:          slog.New(slog.DiscardHandler), LookupEnv: envMap(nil),
			})
			if err != nil {
				t.Fatal(err)
			}
			db := OpenDB(c)
			pinged := make(chan error, 1)
			go func() { pinged <- db.PingContext(context.Background()) }()
			waitFor(t, func() bool { return hung.accepted.Load() > 0 }, "the build to reach the workspace")

			start := time.Now()
			if err := db.Close(); err != nil {
				t.Fatal(err)
			}
			took := time.Since(start)
			t.Logf("%v: db.Close during a hung build took %v", mode, took)
			if took > time.Second { // the target is < 100 ms; 10 s before
				t.Errorf("db.Close took %v during a hung build", took)
			}
			select {
			case err := <-pinged:
				if !errors.Is(err, tokensource.ErrClosed) && !errors.Is(err, sql.ErrConnDone) && !strings.Contains(fmt.Sprint(err), "closed") {
					t.Errorf("the waiting Ping: want ErrClosed, got %v", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("the waiting Ping did not return after Close")
			}
			dialled := hung.accepted.Load()
			if _, err := c.WorkspaceConfig(t.Context()); !errors.Is(err, tokensource.ErrClosed) {
				t.Errorf("WorkspaceConfig after Close: want ErrClosed, got %v", err)
			}
			if _, err := c.TokenSource().Token(t.Context()); !errors.Is(err, tokensource.ErrClosed) {
				t.Errorf("Token after Close: want ErrClosed, got %v", err)
			}
			if n := hung.accepted.Load(); n != dialled {
				t.Errorf("the workspace was dialled %d more times after Close", n-dialled)
			}
			goleak.VerifyNone(t, leaktest.Options(goleak.IgnoreCurrent())...)
		})
	}
}

// countingTransport counts requests by path.
type countingTransport struct {
	base http.RoundTripper
	mu   sync.Mutex
	n    map[string]int
}

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	c.mu.Lock()
	if c.n == nil {
		c.n = map[string]int{}
	}
	c.n[r.URL.Path]++
	c.mu.Unlock()
	return c.base.RoundTrip(r)
}

func (c *countingTransport) count(path string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[path]
}

// TestOAuthRefreshGivesUpWithTheAttempt: OAuth M2M (the Databricks Apps
// path) whose token endpoint refuses, resets or never answers: one fetch
// makes one token request and returns within AttemptTimeout; the SDK's own
// token retrier (which runs on context.Background for a minute and matches
// refused and reset connections and timeouts) does not try again.
func TestOAuthRefreshGivesUpWithTheAttempt(t *testing.T) {
	const attempt = time.Second
	refused, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refusedURL := "http://" + refused.Addr().String() + "/oidc/v1/token"
	refused.Close()
	hung := newHoldListener(t)

	for _, mode := range []string{"refusing", "resetting", "silent"} {
		t.Run(mode, func(t *testing.T) {
			isolateSDK(t)
			var srv *httptest.Server
			srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				switch r.URL.Path {
				case "/oidc/.well-known/oauth-authorization-server":
					tokenURL := srv.URL + "/oidc/v1/token"
					switch mode {
					case "refusing":
						tokenURL = refusedURL
					case "silent":
						tokenURL = hung.URL() + "/oidc/v1/token"
					}
					_ = json.NewEncoder(w).Encode(map[string]string{"token_endpoint": tokenURL, "authorization_endpoint": srv.URL + "/oidc/v1/authorize"})
				case "/oidc/v1/token": // resetting
					conn, _, err := w.(http.Hijacker).Hijack()
					if err == nil {
						if tc, ok := conn.(*net.TCPConn); ok {
							_ = tc.SetLinger(0)
						}
						conn.Close()
					}
				default:
					http.NotFound(w, r)
				}
			}))
			defer srv.Close()
			counter := &countingTransport{base: http.DefaultTransport.(*http.Transport).Clone()}
			defer counter.base.(*http.Transport).CloseIdleConnections()
			c, err := New(t.Context(), Config{
				Host: "127.0.0.1", User: "app", Endpoint: "projects/p/branches/b/endpoints/e",
				WorkspaceConfig: &config.Config{Host: srv.URL, ClientID: "app-id", ClientSecret: "app-secret", AuthType: "oauth-m2m", HTTPTransport: counter,
					HostMetadataResolver: func(context.Context, string) (*config.HostMetadata, error) { return nil, nil }},
				Token:  tokensource.Options{Mode: tokensource.Lazy, AttemptTimeout: attempt, RetrySchedule: []time.Duration{}},
				Logger: slog.New(slog.DiscardHandler), LookupEnv: envMap(nil),
			})
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			_, err = c.TokenSource().Token(t.Context())
			took := time.Since(start)
			tokenRequests := counter.count("/oidc/v1/token")
			t.Logf("%s: %d token request(s), gave up after %v: %v", mode, tokenRequests, took.Round(time.Millisecond), err)
			if err == nil {
				t.Fatal("a token was minted")
			}
			if took > attempt+time.Second {
				t.Errorf("the fetch took %v with a %v attempt timeout", took, attempt)
			}
			if mode != "refusing" && tokenRequests != 1 {
				t.Errorf("want 1 token request, got %d", tokenRequests)
			}
			if tokensource.IsTransient(err) != true {
				t.Errorf("a network failure of the workspace should be transient: %v", err)
			}
			c.Close()
			// An SDK retry would still be sleeping or running here.
			goleak.VerifyNone(t, leaktest.Options(goleak.IgnoreCurrent())...)
			if n := counter.count("/oidc/v1/token"); n != tokenRequests {
				t.Errorf("the SDK retried the token request behind our back: %d requests, %d when the fetch returned", n, tokenRequests)
			}
		})
	}
}

// TestWorkspaceConfigPath: the SDK settings alone (no workspace client) mint
// tokens and look up host and user on the emulator; the caller's config is
// never changed; WorkspaceConfig returns the resolved settings; setting
// both Workspace and WorkspaceConfig is a *ConfigError.
func TestWorkspaceConfigPath(t *testing.T) {
	isolateSDK(t)
	e := lakebasetest.Start(t)
	settings := e.WorkspaceConfig()
	c, err := New(t.Context(), Config{Endpoint: e.Endpoint(), Port: e.Port(), Database: e.Database(), SSLRootCert: e.CAFile(), WorkspaceConfig: settings,
		Logger: slog.New(slog.DiscardHandler), LookupEnv: envMap(nil)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.Role() != e.ServicePrincipal() || c.Host() == "" {
		t.Errorf("looked up role %q host %q", c.Role(), c.Host())
	}
	if settings.HTTPTransport != nil || settings.AuthType != "pat" {
		t.Errorf("New changed the caller's settings: transport %T auth %q", settings.HTTPTransport, settings.AuthType)
	}
	db := OpenDB(c)
	defer db.Close()
	var who string
	if err := db.QueryRowContext(t.Context(), "select current_user").Scan(&who); err != nil || who != e.ServicePrincipal() {
		t.Fatalf("select current_user: %q %v", who, err)
	}
	got, err := c.WorkspaceConfig(t.Context())
	if err != nil || got == nil || got.Host != settings.Host || got.HTTPTransport != nil {
		t.Errorf("WorkspaceConfig: %+v %v", got, err)
	}
	if n := e.Calls(lakebasetest.RouteCredentials); n < 1 {
		t.Errorf("credential calls: %d", n)
	}

	w, err := databricks.NewWorkspaceClient((*databricks.Config)(e.WorkspaceConfig()))
	if err != nil {
		t.Fatal(err)
	}
	_, err = New(t.Context(), Config{Endpoint: e.Endpoint(), LookupEnv: envMap(nil), WorkspaceConfig: e.WorkspaceConfig(),
		Workspace: &Workspace{Config: w.Config, Postgres: w.Postgres, Database: w.Database, CurrentUser: w.CurrentUser}})
	var ce *ConfigError
	if !errors.As(err, &ce) || ce.Setting != "Workspace/WorkspaceConfig" {
		t.Errorf("both set: want a *ConfigError for Workspace/WorkspaceConfig, got %v", err)
	}
}

// TestProfileFromDatabricksCfg: a profile of ~/.databrickscfg (here
// DATABRICKS_CONFIG_FILE) names the workspace and its credentials.
func TestProfileFromDatabricksCfg(t *testing.T) {
	isolateSDK(t)
	e := lakebasetest.Start(t)
	cfgFile := filepath.Join(t.TempDir(), "databrickscfg")
	body := fmt.Sprintf("[DEFAULT]\nhost = https://wrong.invalid\ntoken = dapi-wrong\n\n[lakebase-dev]\nhost = %s\ntoken = %s\n", e.WorkspaceURL(), e.ServicePrincipalToken())
	if err := os.WriteFile(cfgFile, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("DATABRICKS_CONFIG_FILE", cfgFile)
	c, err := New(t.Context(), Config{Endpoint: e.Endpoint(), Port: e.Port(), Database: e.Database(), SSLRootCert: e.CAFile(),
		WorkspaceConfig: &config.Config{Profile: "lakebase-dev",
			HostMetadataResolver: func(context.Context, string) (*config.HostMetadata, error) { return nil, nil }},
		Logger: slog.New(slog.DiscardHandler), LookupEnv: envMap(nil)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.Role() != e.ServicePrincipal() {
		t.Errorf("role %q from the profile's identity", c.Role())
	}
	db := OpenDB(c)
	defer db.Close()
	if err := db.PingContext(t.Context()); err != nil {
		t.Fatal(err)
	}
}

// waitFor polls cond until it holds or 10 s pass.
func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// The SDK's own service interfaces satisfy the connector's narrow ones, so
// the services of a *databricks.WorkspaceClient can be passed as they are.
var (
	_ PostgresAPI    = postgres.PostgresInterface(nil)
	_ DatabaseAPI    = database.DatabaseInterface(nil)
	_ CurrentUserAPI = iam.CurrentUserInterface(nil)
)

// switchProxy forwards TCP connections to target, or resets them while
// down is set: a workspace that is unreachable for a while.
type switchProxy struct {
	ln     net.Listener
	target string
	down   atomic.Bool
	wg     sync.WaitGroup
}

func newSwitchProxy(t *testing.T, target string) *switchProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &switchProxy{ln: ln, target: target}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if p.down.Load() {
				if tc, ok := c.(*net.TCPConn); ok {
					_ = tc.SetLinger(0)
				}
				c.Close()
				continue
			}
			p.wg.Add(1)
			go func() {
				defer p.wg.Done()
				defer c.Close()
				up, err := net.Dial("tcp", target)
				if err != nil {
					return
				}
				defer up.Close()
				done := make(chan struct{}, 2)
				go func() { _, _ = io.Copy(up, c); done <- struct{}{} }()
				go func() { _, _ = io.Copy(c, up); done <- struct{}{} }()
				<-done
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); p.wg.Wait() })
	return p
}

// TestLazyBuildOutageRecovers: with Host and User given, the first fetch
// builds the workspace client (OAuth M2M, as in a Databricks App); while the
// workspace resets connections the fetch fails as a transient
// *tokensource.Error, not a configuration error the token cache would
// remember, and once the workspace answers again a later connection
// authenticates and logs in.
func TestLazyBuildOutageRecovers(t *testing.T) {
	isolateSDK(t)
	e := lakebasetest.Start(t)
	proxy := newSwitchProxy(t, strings.TrimPrefix(e.WorkspaceURL(), "http://"))
	proxy.down.Store(true)
	// OAuth M2M, as in a Databricks App: building the client discovers
	// the workspace's OIDC endpoints, so the build itself needs the network.
	app := e.AppEnv()
	settings := &config.Config{Host: "http://" + proxy.ln.Addr().String(), ClientID: app["DATABRICKS_CLIENT_ID"], ClientSecret: app["DATABRICKS_CLIENT_SECRET"],
		AuthType: "oauth-m2m", HostMetadataResolver: func(context.Context, string) (*config.HostMetadata, error) { return nil, nil }}
	cfg := baseConfig(t, e, nil)
	cfg.WorkspaceConfig = settings
	cfg.Token = tokensource.Options{Mode: tokensource.Lazy, RetrySchedule: []time.Duration{}, BackgroundRetryMin: 50 * time.Millisecond, BackgroundRetryMax: 100 * time.Millisecond}
	c := mustNew(t, cfg)
	db := OpenDB(c)
	defer db.Close()
	err := db.PingContext(t.Context())
	t.Logf("during the outage: %v", err)
	if err == nil {
		t.Fatal("a login without a workspace")
	}
	if !tokensource.IsTransient(err) {
		t.Errorf("an unreachable workspace at the first fetch should be transient: %v", err)
	}
	var te *tokensource.Error
	if !errors.As(err, &te) {
		t.Errorf("want a *tokensource.Error, got %T %v", err, err)
	}
	proxy.down.Store(false)
	deadline := time.Now().Add(10 * time.Second)
	for {
		err = db.PingContext(t.Context())
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no recovery after the workspace came back: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestBuildErrorClass: a failed build of the workspace client is transient
// for a token fetch only when the workspace could not be reached; New and
// WorkspaceConfig report its *ConfigError, never transient.
func TestBuildErrorClass(t *testing.T) {
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
	unknown := &net.DNSError{Err: "no such host", Name: "x.invalid", IsNotFound: true}
	for _, tc := range []struct {
		name      string
		cause     error
		transient bool
	}{
		{"refused", sdkclient.NewNetworkErrorForTest(refused), true},
		{"unknown host", sdkclient.NewNetworkErrorForTest(unknown), false},
		{"auth", errors.New("default auth: cannot configure default credentials"), false},
	} {
		be := &buildError{err: tc.cause, ce: workspaceError(tc.cause, "", "build the Databricks workspace client")}
		if got := tokensource.IsTransient(be); got != tc.transient {
			t.Errorf("%s: IsTransient = %v", tc.name, got)
		}
		var ce *ConfigError
		if !errors.As(be, &ce) || !strings.HasPrefix(ce.Setting, EnvDatabricksHost) {
			t.Errorf("%s: no *ConfigError naming DATABRICKS_HOST: %v", tc.name, be)
		}
		if got := asConfigError(fmt.Errorf("wrapped: %w", be)); got != be.ce || tokensource.IsTransient(got) {
			t.Errorf("%s: asConfigError = %v", tc.name, got)
		}
	}
}

// TestOneLoggerPerConfig: the token options take their logger and
// providers from Config; setting them on Config.Token is a *ConfigError
// naming the fix, not a second logger silently merged.
func TestOneLoggerPerConfig(t *testing.T) {
	cfg := Config{Host: "h", User: "u", Endpoint: "projects/p/branches/b/endpoints/e", LookupEnv: envMap(nil),
		Token: tokensource.Options{Logger: slog.New(slog.DiscardHandler)}}
	err := cfg.Validate()
	var ce *ConfigError
	if !errors.As(err, &ce) || !strings.Contains(ce.Setting, "Token.Logger") || !strings.Contains(ce.Fix, "Config.Logger") {
		t.Errorf("want a *ConfigError naming Token.Logger with the fix Config.Logger, got %v", err)
	}
}
