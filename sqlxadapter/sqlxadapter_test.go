package sqlxadapter

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/DATA-DOG/go-sqlmock"
	"github.com/jmoiron/sqlx"
	"go.uber.org/goleak"

	"github.com/lakebase-go/lakebase/connector"
	"github.com/lakebase-go/lakebase/internal/leaktest"
	"github.com/lakebase-go/lakebase/lakebasetest"
	"github.com/lakebase-go/lakebase/tokensource"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, leaktest.Options()...) }

func TestBindTypeIsDollar(t *testing.T) {
	db, mock, err := sqlmock.New()
	if err != nil {
		t.Fatal(err)
	}
	x := wrap(db)
	if got := x.Rebind("SELECT ? WHERE a = ?"); got != "SELECT $1 WHERE a = $2" {
		t.Errorf("Rebind = %q", got)
	}
	if sqlx.BindType(DriverName) != sqlx.DOLLAR {
		t.Errorf("bind type of %q is not DOLLAR", DriverName)
	}
	mock.ExpectExec(`INSERT INTO todos \(title\) VALUES \(\$1\)`).WithArgs("milk").WillReturnResult(sqlmock.NewResult(1, 1))
	if _, err := x.NamedExec("INSERT INTO todos (title) VALUES (:title)", map[string]any{"title": "milk"}); err != nil {
		t.Fatal(err)
	}
	mock.ExpectClose()
	if err := x.Close(); err != nil {
		t.Fatal(err)
	}
	if err := mock.ExpectationsWereMet(); err != nil {
		t.Error(err)
	}
}

type todo struct {
	ID    int64  `db:"id"`
	Title string `db:"title"`
}

func TestAcrossTokenRotation(t *testing.T) {
	e := lakebasetest.Start(t, lakebasetest.WithMinTTL(time.Second), lakebasetest.WithTTL(2*time.Second))
	w := e.WorkspaceConfig()
	if err := e.AdminExec(t.Context(), fmt.Sprintf(`CREATE TABLE todos (id bigserial PRIMARY KEY, title text); GRANT ALL ON todos, todos_id_seq TO "%s"`, e.ServicePrincipal())); err != nil {
		t.Fatal(err)
	}
	x, err := OpenConfig(t.Context(), connector.Config{
		Endpoint: e.Endpoint(), Host: e.Host(), Port: e.Port(), Database: e.Database(), User: e.ServicePrincipal(),
		SSLRootCert: e.CAFile(), WorkspaceConfig: w, LookupEnv: func(string) (string, bool) { return "", false },
		Token: tokensource.Options{EarlyRefresh: time.Second, SafetyMargin: 300 * time.Millisecond, BackgroundRetryMin: 200 * time.Millisecond},
	}, connector.WithMaxIdleConns(-1))
	if err != nil {
		t.Fatal(err)
	}
	defer x.Close()
	ctx := context.Background()
	deadline := time.Now().Add(5 * time.Second)
	n := 0
	for time.Now().Before(deadline) {
		n++
		if _, err := x.NamedExecContext(ctx, "INSERT INTO todos (title) VALUES (:title)", todo{Title: fmt.Sprint("t", n)}); err != nil {
			t.Fatalf("NamedExec %d: %v", n, err)
		}
		var got todo
		if err := x.GetContext(ctx, &got, x.Rebind("SELECT id, title FROM todos WHERE title = ?"), fmt.Sprint("t", n)); err != nil {
			t.Fatalf("Get %d: %v", n, err)
		}
	}
	var all []todo
	if err := x.SelectContext(ctx, &all, "SELECT id, title FROM todos ORDER BY id"); err != nil || len(all) != n {
		t.Fatalf("Select: %d rows, %v; want %d", len(all), err, n)
	}
	if calls := e.Calls(lakebasetest.RouteCredentials); calls < 2 {
		t.Errorf("credential calls = %d, want rotation across the run", calls)
	}
}

func TestCloseStopsRefresh(t *testing.T) {
	e := lakebasetest.Start(t)
	w := e.WorkspaceConfig()
	ignore := goleak.IgnoreCurrent()
	x, err := OpenConfig(t.Context(), connector.Config{Endpoint: e.Endpoint(), Host: e.Host(), Port: e.Port(), User: e.ServicePrincipal(),
		SSLRootCert: e.CAFile(), WorkspaceConfig: w, LookupEnv: func(string) (string, bool) { return "", false }})
	if err != nil {
		t.Fatal(err)
	}
	if err := x.Ping(); err != nil {
		t.Fatal(err)
	}
	if err := x.Close(); err != nil {
		t.Fatal(err)
	}
	goleak.VerifyNone(t, append(leaktest.Options(ignore), goleak.IgnoreAnyFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreAnyFunction("net/http.(*persistConn).writeLoop"), goleak.IgnoreAnyFunction("net/http.(*conn).serve"))...)
}

// TestOpenAppliesEveryPoolOption: Open takes connector pool options, all of
// them, in order (no network: a static-password connector).
func TestOpenAppliesEveryPoolOption(t *testing.T) {
	c, err := connector.New(t.Context(), connector.Config{Host: "localhost", User: "u", Password: "p", SSLMode: "disable",
		LookupEnv: func(string) (string, bool) { return "", false }})
	if err != nil {
		t.Fatal(err)
	}
	x := Open(c, connector.WithMaxOpenConns(9), connector.WithMaxOpenConns(2))
	defer x.Close()
	if got := x.Stats().MaxOpenConnections; got != 2 {
		t.Errorf("MaxOpenConnections = %d, want 2", got)
	}
}
