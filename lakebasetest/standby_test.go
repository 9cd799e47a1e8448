package lakebasetest

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/databricks/databricks-sdk-go/service/database"
	"github.com/databricks/databricks-sdk-go/service/postgres"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// connectAs logs in to host:port as the service principal with a token
// minted for it.
func connectAs(ctx context.Context, e *Emulator, host string, port int, token string) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(fmt.Sprintf("host=%s port=%d dbname=%s sslmode=verify-full sslrootcert='%s'", host, port, e.Database(), e.CAFile()))
	if err != nil {
		return nil, err
	}
	cfg.User, cfg.Password = e.ServicePrincipal(), token
	return pgx.ConnectConfig(ctx, cfg)
}

func inRecovery(ctx context.Context, t *testing.T, conn *pgx.Conn) bool {
	t.Helper()
	var r bool
	if err := conn.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&r); err != nil {
		t.Fatal(err)
	}
	return r
}

func countRows(ctx context.Context, conn *pgx.Conn, id int) (int, error) {
	var n int
	err := conn.QueryRow(ctx, "SELECT count(*)::int FROM standby_t WHERE id = $1", id).Scan(&n)
	return n, err
}

// TestStandby covers the standby end to end on one base backup: the
// endpoint reports it, token logins are checked there as on the primary,
// writes fail with 25006, paused replay hides fresh commits until resumed,
// and Failover moves the primary's address to it.
func TestStandby(t *testing.T) {
	e := Start(t)
	ctx := t.Context()
	if err := e.Failover(ctx); err == nil {
		t.Fatal("Failover without a standby succeeded")
	}
	if e.Standby() != nil || e.ReadOnlyHost() != "" {
		t.Fatal("a standby without StartStandby")
	}
	w, err := e.fullClient(spBearer(e))
	if err != nil {
		t.Fatal(err)
	}
	ep, err := w.Postgres.GetEndpoint(ctx, postgres.GetEndpointRequest{Name: e.Endpoint()})
	if err != nil || ep.Status.Hosts.ReadOnlyHost != "" {
		t.Fatalf("read_only_host %q without a standby (%v)", ep.Status.Hosts.ReadOnlyHost, err)
	}
	start := time.Now()
	s, err := e.StartStandby(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("standby started in %v", time.Since(start))
	if s == nil || e.ReadOnlyHost() != s.Host() || s.Host() == e.Host() || s.Port() != e.Port() {
		t.Fatalf("standby %v, read-only host %q", s, e.ReadOnlyHost())
	}
	if again, err := e.StartStandby(ctx); err != nil || again != s {
		t.Fatalf("second StartStandby: %v, %v (want the running standby)", again, err)
	}

	ep, err = w.Postgres.GetEndpoint(ctx, postgres.GetEndpointRequest{Name: e.Endpoint()})
	if err != nil {
		t.Fatal(err)
	}
	if ep.Status.Hosts.ReadOnlyHost != s.Host() || ep.Status.Hosts.Host != e.Host() {
		t.Fatalf("endpoint hosts %+v, want read_only_host %s", ep.Status.Hosts, s.Host())
	}
	inst, err := w.Database.GetDatabaseInstance(ctx, database.GetDatabaseInstanceRequest{Name: e.Instance()})
	if err != nil || inst.ReadOnlyDns != s.Host() {
		t.Fatalf("instance read_only_dns %q, %v", inst.ReadOnlyDns, err)
	}

	if err := e.AdminExec(ctx, fmt.Sprintf(`CREATE TABLE standby_t (id int PRIMARY KEY); GRANT ALL ON standby_t TO %q; INSERT INTO standby_t VALUES (1)`, e.ServicePrincipal())); err != nil {
		t.Fatal(err)
	}
	if err := s.CatchUp(ctx); err != nil {
		t.Fatal(err)
	}

	// The same token checks: a token logs in on both servers, a revoked
	// one on neither.
	sp := e.ServicePrincipal()
	ro, err := connectAs(ctx, e, s.Host(), s.Port(), e.MintToken(sp, time.Hour))
	if err != nil {
		t.Fatalf("token login on the standby: %v", err)
	}
	defer ro.Close(context.Background())
	if !inRecovery(ctx, t, ro) {
		t.Fatal("the read-only host is not in recovery")
	}
	if n, err := countRows(ctx, ro, 1); err != nil || n != 1 {
		t.Fatalf("row 1 on the standby: %d, %v", n, err)
	}
	var pgErr *pgconn.PgError
	if _, err := ro.Exec(ctx, "INSERT INTO standby_t VALUES (2)"); !errors.As(err, &pgErr) || pgErr.Code != "25006" {
		t.Fatalf("write on the standby: %v, want SQLSTATE 25006", err)
	}
	revoked := e.MintToken(sp, time.Hour)
	e.RevokeRole(sp)
	if c, err := connectAs(ctx, e, s.Host(), s.Port(), revoked); err == nil {
		c.Close(ctx)
		t.Fatal("a revoked token logged in on the standby")
	} else {
		wantAuthFailure(t, "revoked token on the standby", err)
	}
	fd, err := connectAs(ctx, e, s.Host(), e.FrontDoorPort(), e.MintToken(sp, time.Hour))
	if err != nil {
		t.Fatalf("the standby's front door: %v", err)
	}
	if !inRecovery(ctx, t, fd) {
		t.Fatal("the standby's front door reaches a primary")
	}
	fd.Close(ctx)

	// Paused replay: a commit on the primary stays invisible until resumed.
	if err := s.PauseReplay(ctx); err != nil {
		t.Fatal(err)
	}
	if err := e.AdminExec(ctx, "INSERT INTO standby_t VALUES (3)"); err != nil {
		t.Fatal(err)
	}
	if err := s.CatchUp(ctx); err == nil {
		t.Fatal("CatchUp with replay paused succeeded")
	}
	// The standby has received the commit (streaming continues) but not
	// applied it.
	var lsn string
	if err := e.adminQuery(ctx, "SELECT pg_logical_emit_message(false, 'test', 'x')::text", &lsn); err != nil {
		t.Fatal(err)
	}
	pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := poll(pctx, "WAL to arrive", func() (bool, error) {
		var ok bool
		err := s.query(pctx, "SELECT pg_last_wal_receive_lsn() >= '"+lsn+"'::pg_lsn", &ok)
		return ok, err
	}); err != nil {
		t.Fatal(err)
	}
	if n, err := countRows(ctx, ro, 3); err != nil || n != 0 {
		t.Fatalf("row 3 visible with replay paused: %d, %v", n, err)
	}
	if err := s.ResumeReplay(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.CatchUp(ctx); err != nil {
		t.Fatal(err)
	}
	if n, err := countRows(ctx, ro, 3); err != nil || n != 1 {
		t.Fatalf("row 3 after resume: %d, %v", n, err)
	}

	// Failover: the primary's sessions drop, its address reaches the
	// promoted standby, which has every commit and accepts writes.
	old, err := connectAs(ctx, e, e.Host(), e.Port(), e.MintToken(sp, time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close(context.Background())
	if err := e.Failover(ctx); err != nil {
		t.Fatal(err)
	}
	if err := old.Ping(ctx); err == nil {
		t.Fatal("a session on the old primary survived the failover")
	}
	tok := e.MintToken(sp, time.Hour)
	for _, port := range []int{e.Port(), e.FrontDoorPort()} {
		c, err := connectAs(ctx, e, e.Host(), port, tok)
		if err != nil {
			t.Fatalf("port %d after failover: %v", port, err)
		}
		var addr string
		if err := c.QueryRow(ctx, "SELECT host(inet_server_addr())").Scan(&addr); err != nil || addr != s.Host() {
			t.Fatalf("port %d reaches %q (%v), want the promoted standby %s", port, addr, err, s.Host())
		}
		if inRecovery(ctx, t, c) {
			t.Fatalf("port %d: the new primary is in recovery", port)
		}
		if _, err := c.Exec(ctx, "INSERT INTO standby_t VALUES ($1)", 10+port%1000); err != nil {
			t.Fatalf("write on the new primary: %v", err)
		}
		c.Close(ctx)
	}
	if err := e.AdminExec(ctx, "INSERT INTO standby_t VALUES (4)"); err != nil {
		t.Fatalf("AdminExec after failover: %v", err)
	}
	ep, err = w.Postgres.GetEndpoint(ctx, postgres.GetEndpointRequest{Name: e.Endpoint()})
	if err != nil || ep.Status.Hosts.ReadOnlyHost != "" || e.ReadOnlyHost() != "" {
		t.Fatalf("after failover the endpoint reports read_only_host %q (%v)", ep.Status.Hosts.ReadOnlyHost, err)
	}
	if _, err := e.StartStandby(ctx); err == nil {
		t.Fatal("StartStandby after Failover succeeded")
	}
	if err := e.Failover(ctx); err == nil {
		t.Fatal("a second Failover succeeded")
	}
	// Restart acts on the new primary; its address keeps working.
	if err := e.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	c, err := connectAs(ctx, e, e.Host(), e.Port(), tok)
	if err != nil {
		t.Fatalf("after restarting the new primary: %v", err)
	}
	defer c.Close(context.Background())
	var n int
	if err := c.QueryRow(ctx, "SELECT count(*)::int FROM standby_t").Scan(&n); err != nil || n != 5 {
		t.Fatalf("rows on the new primary: %d, %v (want 1, 3, 4 and the two writes after failover)", n, err)
	}
}
