package proxy

import (
	"context"
	"crypto/tls"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lakebase-go/lakebase/lakebasetest"
	"github.com/lakebase-go/lakebase/tokensource"
)

// TestPsql drives the real psql and pg_dump through the proxy.
func TestPsql(t *testing.T) {
	e := lakebasetest.Start(t)
	h := startProxy(t, e, nil)
	ctx := t.Context()

	t.Run("current_user", func(t *testing.T) {
		out, err := h.psql(ctx, nil, "-c", "select current_user")
		if err != nil || out != h.role() {
			t.Fatalf("psql: %q, %v; want %q", out, err, h.role())
		}
		// The client's database, application_name and options reach the
		// backend session.
		out, err = h.psql(ctx, []string{"PGAPPNAME=psql-through-proxy", "PGOPTIONS=-c search_path=proxy_test_schema"},
			"-c", "select current_database() || ' ' || current_setting('application_name') || ' ' || current_setting('search_path')")
		if want := e.Database() + " psql-through-proxy proxy_test_schema"; err != nil || out != want {
			t.Fatalf("session settings: %q, %v; want %q", out, err, want)
		}
	})

	t.Run("copy 10000 rows in and out", func(t *testing.T) {
		dir := t.TempDir()
		in := filepath.Join(dir, "in.csv")
		var b strings.Builder
		for i := 1; i <= 10000; i++ {
			fmt.Fprintf(&b, "%d,\"row %d, with a comma and \"\"quotes\"\"\"\n", i, i)
		}
		if err := os.WriteFile(in, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
		out := filepath.Join(dir, "out.csv")
		got, err := h.psql(ctx, nil,
			"-c", "create table copy_test (id int primary key, v text)",
			"-c", fmt.Sprintf(`\copy copy_test from '%s' with (format csv)`, in),
			"-c", "select count(*), sum(id) from copy_test",
			"-c", fmt.Sprintf(`\copy (select * from copy_test order by id) to '%s' with (format csv)`, out))
		if err != nil {
			t.Fatalf("psql: %v\n%s", err, got)
		}
		if !strings.Contains(got, "10000|50005000") {
			t.Errorf("after \\copy in: %q, want 10000 rows summing to 50005000", got)
		}
		back, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		orig, _ := os.ReadFile(in)
		if string(back) != string(orig) {
			t.Errorf("\\copy out differs from what went in (%d vs %d bytes)", len(back), len(orig))
		}
	})

	t.Run("pg_dump --schema-only", func(t *testing.T) {
		if out, err := h.psql(ctx, nil, "-c", "create table dump_me (id bigint primary key, note text not null default 'x')"); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		cmd := exec.CommandContext(ctx, pgBin(t, "pg_dump"), "--schema-only", "-h", "127.0.0.1", "-p", fmt.Sprint(h.port), "-U", h.role(), "-t", "dump_me", e.Database())
		cmd.Env = clientEnv()
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("pg_dump: %v\n%s", err, out)
		}
		for _, want := range []string{"CREATE TABLE public.dump_me", "note text DEFAULT 'x'::text NOT NULL", "PRIMARY KEY (id)"} {
			if !strings.Contains(string(out), want) {
				t.Errorf("pg_dump output lacks %q:\n%s", want, out)
			}
		}
	})

	t.Run("ctrl-c cancels through the proxy", func(t *testing.T) {
		cmd := exec.Command(pgBin(t, "psql"), "-X", "-h", "127.0.0.1", "-p", fmt.Sprint(h.port), "-U", h.role(), "-d", e.Database(), "-c", "select pg_sleep(30)")
		cmd.Env = clientEnv()
		var out strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		eventually(t, 10*time.Second, "pg_sleep running", func() bool { return backends(t, e, h.role(), "select pg_sleep") == 1 })
		start := time.Now()
		_ = cmd.Process.Signal(os.Interrupt) // psql sends a CancelRequest with the proxy's key
		err := cmd.Wait()
		if err == nil || !strings.Contains(out.String(), "canceling statement due to user request") {
			t.Fatalf("psql after SIGINT: %v\n%s", err, out.String())
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("cancel took %v", d)
		}
		eventually(t, 5*time.Second, "no backend left", func() bool { return backends(t, e, h.role(), "") == 0 })
	})

	t.Run("sslmode=require needs local TLS", func(t *testing.T) {
		out, err := h.psql(ctx, []string{"PGSSLMODE=require"}, "-c", "select 1")
		if err == nil || !strings.Contains(out, "server does not support SSL") {
			t.Errorf("sslmode=require without local TLS: %q, %v", out, err)
		}
	})
}

// TestPsqlLocalTLS: with a self-signed certificate, clients that insist on
// sslmode=require get TLS.
func TestPsqlLocalTLS(t *testing.T) {
	e := lakebasetest.Start(t)
	cfg, err := SelfSignedTLS()
	if err != nil {
		t.Fatal(err)
	}
	h := startProxy(t, e, func(c *Config) { c.TLS = cfg })
	out, err := h.psql(t.Context(), []string{"PGSSLMODE=require"}, "-c", "select current_user")
	if err != nil || out != h.role() {
		t.Fatalf("psql sslmode=require: %q, %v", out, err)
	}
	// The client side is TLS too: pgx can tell.
	c, err := h.connect(t.Context(), "sslmode=require")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	if _, ok := c.PgConn().Conn().(*tls.Conn); !ok {
		t.Errorf("client connection is %T, want *tls.Conn", c.PgConn().Conn())
	}
}

// TestPsqlAcrossRotations keeps one psql session open across three token
// rotations of 3-second tokens, then opens new sessions after the first
// token has expired.
func TestPsqlAcrossRotations(t *testing.T) {
	e := lakebasetest.Start(t, lakebasetest.WithTTL(3*time.Second))
	h := startProxy(t, e, func(c *Config) {
		c.Connector.Token = tokensource.Options{EarlyRefresh: time.Second, SafetyMargin: 500 * time.Millisecond, BackgroundRetryMin: 100 * time.Millisecond}
	})
	ctx := t.Context()
	first, err := h.s.Connector().TokenSource().Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if life := time.Until(first.Expiry); life > 3*time.Second {
		t.Fatalf("first token lives %v, want a 3 s token", life)
	}
	p := h.startPsql(t)
	pid := p.ask(t, "select pg_backend_pid();")
	calls := e.Calls(lakebasetest.RouteCredentials)
	for i := 1; i <= 3; i++ {
		eventually(t, 15*time.Second, fmt.Sprintf("rotation %d", i), func() bool { return e.Calls(lakebasetest.RouteCredentials) >= calls+int64(i) })
		if got := p.ask(t, "select current_user || ' ' || pg_backend_pid();"); got != h.role()+" "+pid {
			t.Fatalf("after rotation %d the open session answers %q, want %q", i, got, h.role()+" "+pid)
		}
	}
	if !time.Now().After(first.Expiry) {
		t.Fatalf("the first token has not expired yet after three rotations")
	}
	for i := range 2 {
		out, err := h.psql(ctx, nil, "-c", "select current_user")
		if err != nil || out != h.role() {
			t.Fatalf("new psql session %d after the first token expired: %q, %v", i, out, err)
		}
	}
	if r := e.Rejects(h.role()); r != 0 {
		t.Errorf("%d logins refused, want none (an expired token was used)", r)
	}
}
