package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/lakebase-go/lakebase/lakebasetest"
)

func getHealth(t *testing.T, addr net.Addr, path string) (int, Health) {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://"+addr.String()+path, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	var h Health
	if err := json.NewDecoder(resp.Body).Decode(&h); err != nil {
		t.Fatalf("GET %s: body: %v", path, err)
	}
	return resp.StatusCode, h
}

// TestShutdown: open sessions finish within the grace period; new clients
// are refused at once; Run returns nil.
func TestShutdown(t *testing.T) {
	e := lakebasetest.Start(t)

	t.Run("sessions finish within the grace", func(t *testing.T) {
		h := startProxy(t, e, func(c *Config) { c.ShutdownGrace = 20 * time.Second; c.HTTPAddress = "127.0.0.1:0" })
		a := h.mustConnect(t.Context())
		h.stop()
		eventually(t, 5*time.Second, "listener closed", func() bool {
			c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", h.port))
			if err == nil {
				_ = c.Close()
			}
			return err != nil
		})
		if code, body := getHealth(t, h.s.HTTPAddr(), "/readyz"); code != http.StatusServiceUnavailable || body.Status != "shutting down" || body.Open != 1 {
			t.Errorf("readyz while draining: %d %+v", code, body)
		}
		var n int
		if err := a.QueryRow(t.Context(), "select 41 + 1").Scan(&n); err != nil || n != 42 {
			t.Fatalf("an open session during the grace period: %d, %v", n, err)
		}
		start := time.Now()
		_ = a.Close(t.Context())
		select {
		case err := <-h.done:
			close(h.done)
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Run did not return after the last session ended")
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("Run returned %v after the last session, want at once", d)
		}
	})

	t.Run("sessions past the grace are closed", func(t *testing.T) {
		h := startProxy(t, e, func(c *Config) { c.ShutdownGrace = 300 * time.Millisecond })
		a := h.mustConnect(t.Context())
		busy := h.mustConnect(t.Context())
		errc := make(chan error, 1)
		go func() { _, err := busy.Exec(context.Background(), "select pg_sleep(30)"); errc <- err }()
		eventually(t, 10*time.Second, "pg_sleep running", func() bool { return backends(t, e, h.role(), "select pg_sleep") == 1 })
		if err := h.shutdown(10 * time.Second); err != nil {
			t.Fatal(err)
		}
		var n int
		if err := a.QueryRow(t.Context(), "select 1").Scan(&n); err == nil {
			t.Error("a session outlived the grace period")
		}
		if err := <-errc; err == nil {
			t.Error("the running query finished")
		}
		// The running query was cancelled, not left running for nobody.
		if h.s.Stats().Cancels < 1 {
			t.Errorf("no cancel sent for the running query at the forced close")
		}
		if !strings.Contains(h.logs.String(), "grace period over") {
			t.Error("no log line about sessions closed at the end of the grace period")
		}
		eventually(t, 5*time.Second, "backend closed", func() bool { return backends(t, e, h.role(), "") == 0 })
	})

	t.Run("a login in progress is refused with 57P01", func(t *testing.T) {
		h := startProxy(t, e, func(c *Config) { c.Connector.Port = e.FrontDoorPort() })
		e.SetWakeDelay(time.Hour)
		e.Suspend()
		defer func() { e.Resume(); e.SetWakeDelay(300 * time.Millisecond) }()
		errc := make(chan error, 1)
		go func() {
			c, err := h.connect(context.Background(), "")
			if err == nil {
				_ = c.Close(context.Background())
			}
			errc <- err
		}()
		eventually(t, 10*time.Second, "login waiting for the wake-up", func() bool { return e.RefusedWhileWaking() > 0 })
		if err := h.shutdown(10 * time.Second); err != nil {
			t.Fatal(err)
		}
		if err := <-errc; pgCode(err) != "57P01" {
			t.Errorf("client logging in during the shutdown: %v, want 57P01", err)
		}
	})
}

// TestHealth: /livez and /readyz with counts.
func TestHealth(t *testing.T) {
	e := lakebasetest.Start(t)
	h := startProxy(t, e, func(c *Config) { c.HTTPAddress = "127.0.0.1:0" })
	addr := h.s.HTTPAddr()
	if code, body := getHealth(t, addr, "/livez"); code != 200 || body.Status != "ok" {
		t.Errorf("livez: %d %+v", code, body)
	}
	code, body := getHealth(t, addr, "/readyz")
	if code != 200 || body.Token == nil || !*body.Token || body.LastLogin != "none" {
		t.Errorf("readyz at start: %d %+v", code, body)
	}
	c := h.mustConnect(t.Context())
	if _, err := c.Exec(t.Context(), "select 1"); err != nil {
		t.Fatal(err)
	}
	code, body = getHealth(t, addr, "/readyz")
	if code != 200 || body.LastLogin != "ok" || body.Open != 1 || body.Total != 1 {
		t.Errorf("readyz with a session: %d %+v", code, body)
	}
	// A client's own mistake (a database that does not exist) does not make
	// the proxy unready; a login the proxy cannot make does.
	_, _ = pgx.Connect(t.Context(), fmt.Sprintf("host=127.0.0.1 port=%d user=%s dbname=nope sslmode=disable", h.port, h.role()))
	if code, body = getHealth(t, addr, "/readyz"); code != 200 || body.LoginFailures != 1 {
		t.Errorf("readyz after a client asked for a missing database: %d %+v", code, body)
	}
	e.RevokeRole(h.role())
	e.FailNext(lakebasetest.RouteCredentials, 100, 403, "PERMISSION_DENIED")
	_, err := h.connect(t.Context(), "")
	if err == nil {
		t.Fatal("login with revoked tokens and a refusing workspace succeeded")
	}
	if code, body = getHealth(t, addr, "/readyz"); code != http.StatusServiceUnavailable || body.LastLogin != "failed" || body.Problem == "" {
		t.Errorf("readyz after a failed login: %d %+v", code, body)
	}
	noSecret(t, "readyz", fmt.Sprintf("%+v", body))
	e.FailNext(lakebasetest.RouteCredentials, 0, 0, "")
}

// TestLoginErrors: a backend login the connector refuses reaches the
// client as FATAL with the SQLSTATE, the explanation and the fix as the
// hint; never a token, in the error or the logs.
func TestLoginErrors(t *testing.T) {
	e := lakebasetest.Start(t)
	const email = "norole@example.com"
	bearer := e.AddIdentityWithoutRole(email)
	h := startProxy(t, e, func(c *Config) {
		c.Connector.WorkspaceConfig, c.Connector.User = e.WorkspaceConfigFor(bearer), email
	})
	_, err := pgx.Connect(t.Context(), fmt.Sprintf("host=127.0.0.1 port=%d user=%s dbname=%s sslmode=disable", h.port, email, e.Database()))
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "28000" || !strings.Contains(pe.Message, "does not exist") || !strings.Contains(pe.Hint, "databricks_create_role") {
		t.Fatalf("role missing: %+v (%v); want 28000, the reason and the fix", pe, err)
	}
	out, perr := h.psql(t.Context(), nil, "-U", email, "-c", "select 1")
	if perr == nil || !strings.Contains(out, "HINT:  fix: create it") {
		t.Errorf("psql shows: %q, %v; want the hint", out, perr)
	}
	noSecret(t, "error", pe.Message+pe.Hint+out)
	noSecret(t, "logs", h.logs.String())
	closes := h.logs.lines(t, "proxy: session close")
	if len(closes) == 0 || !strings.Contains(fmt.Sprint(closes[0]["error"]), "28000") {
		t.Errorf("session close lines: %v", closes)
	}
}

// TestRefusedTokenRecovery: tokens revoked while the compute is suspended
// (two faults at once): the first client after rides the wake-up out,
// its refused login forces one token refresh, and it gets in.
func TestRefusedTokenRecovery(t *testing.T) {
	e := lakebasetest.Start(t)
	h := startProxy(t, e, func(c *Config) { c.Connector.Port = e.FrontDoorPort() })
	c := h.mustConnect(t.Context())
	_ = c.Close(t.Context())
	mints := e.Calls(lakebasetest.RouteCredentials)
	e.RevokeRole(h.role())
	e.Suspend()
	c2, err := h.connect(t.Context(), "")
	if err != nil {
		t.Fatalf("client after revocation and suspend: %v", err)
	}
	_ = c2.Close(t.Context())
	if got := e.Calls(lakebasetest.RouteCredentials) - mints; got != 1 {
		t.Errorf("%d credential calls, want exactly one forced refresh", got)
	}
	if e.WakeUps() != 1 || e.Rejects(h.role()) != 1 {
		t.Errorf("wake-ups %d, refused logins %d; want 1 and 1", e.WakeUps(), e.Rejects(h.role()))
	}
}

// TestSessionLogs: one line per session open and close, with the client,
// database, duration and bytes; never a token.
func TestSessionLogs(t *testing.T) {
	e := lakebasetest.Start(t)
	h := startProxy(t, e, nil)
	c, err := h.connect(t.Context(), "application_name=logtest")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Exec(t.Context(), "select repeat('x', 10000)"); err != nil {
		t.Fatal(err)
	}
	_ = c.Close(t.Context())
	eventually(t, 5*time.Second, "session closed", func() bool { return len(h.logs.lines(t, "proxy: session close")) == 1 })
	opens := h.logs.lines(t, "proxy: session open")
	if len(opens) != 1 || opens[0]["application_name"] != "logtest" || opens[0]["database"] != e.Database() || opens[0]["client"] == "" {
		t.Errorf("open lines: %v", opens)
	}
	cl := h.logs.lines(t, "proxy: session close")[0]
	if cl["end"] != "client terminated" || cl["bytes_out"].(float64) < 10000 || cl["bytes_in"].(float64) == 0 || cl["duration"].(float64) <= 0 {
		t.Errorf("close line: %v", cl)
	}
	if _, ok := cl["error"]; ok {
		t.Errorf("a clean close logged an error: %v", cl)
	}
	noSecret(t, "logs", h.logs.String())
}
