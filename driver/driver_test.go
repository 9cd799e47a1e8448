package driver_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/lakebase-go/lakebase/internal/leaktest"

	"github.com/lakebase-go/lakebase/connector"
	"github.com/lakebase-go/lakebase/driver"
	"github.com/lakebase-go/lakebase/lakebasetest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, leaktest.Options()...)
}

// workspaceEnv points the SDK's unified auth at the emulator, the way a
// program configured only through the environment would be.
func workspaceEnv(t *testing.T, e *lakebasetest.Emulator) {
	t.Helper()
	t.Setenv("DATABRICKS_HOST", e.WorkspaceURL())
	t.Setenv("DATABRICKS_TOKEN", e.ServicePrincipalToken())
	t.Setenv("DATABRICKS_CONFIG_FILE", t.TempDir()+"/none.cfg")
	for _, k := range []string{"DATABRICKS_CLIENT_ID", "DATABRICKS_CLIENT_SECRET", "DATABRICKS_CONFIG_PROFILE", "PGHOST", "PGUSER", "PGPORT", "PGDATABASE", "PGSSLMODE", "PGSSLROOTCERT", "LAKEBASE_ENDPOINT", "LAKEBASE_INSTANCE"} {
		t.Setenv(k, "")
	}
}

func TestSQLOpenBothDSNForms(t *testing.T) {
	e := lakebasetest.Start(t)
	workspaceEnv(t, e)
	kv := fmt.Sprintf("host=%s port=%d dbname=%s user=%s sslrootcert='%s' lakebase_endpoint=%s refresh=lazy",
		e.Host(), e.Port(), e.Database(), e.ServicePrincipal(), e.CAFile(), e.Endpoint())
	u := fmt.Sprintf("postgres://%s@%s:%d/%s?sslmode=verify-full&sslrootcert=%s&lakebase_endpoint=%s",
		url.PathEscape(e.ServicePrincipal()), e.Host(), e.Port(), e.Database(), url.QueryEscape(e.CAFile()), url.QueryEscape(e.Endpoint()))
	for name, dsn := range map[string]string{"keyword/value": kv, "URL": u} {
		t.Run(name, func(t *testing.T) {
			db, err := sql.Open("lakebase", dsn)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			db.SetMaxIdleConns(0)
			for i := 0; i < 3; i++ {
				var user string
				if err := db.QueryRowContext(context.Background(), "SELECT current_user").Scan(&user); err != nil {
					t.Fatal(err)
				}
				if user != e.ServicePrincipal() {
					t.Fatalf("current_user = %q", user)
				}
			}
		})
	}
}

func TestSQLOpenRejectsBadDSNUpFront(t *testing.T) {
	_, err := sql.Open("lakebase", "lakebase_endpiont=projects/p/branches/b/endpoints/e")
	if err == nil {
		t.Fatal("sql.Open accepted an unknown key")
	}
}

func TestDBCloseStopsRefresh(t *testing.T) {
	e := lakebasetest.Start(t)
	// Snapshot after the emulator started; HTTP keep-alive goroutines of the
	// workspace client end when the emulator closes, after this check.
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent(),
		goleak.IgnoreAnyFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreAnyFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreAnyFunction("net/http.(*conn).serve"))
	workspaceEnv(t, e)
	dsn := fmt.Sprintf("host=%s port=%d user=%s sslrootcert='%s' lakebase_endpoint=%s",
		e.Host(), e.Port(), e.ServicePrincipal(), e.CAFile(), e.Endpoint())
	db, err := sql.Open("lakebase", dsn)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Ping(); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestSQLOpenValueErrorsAreDSNErrors: a bad sslmode, an unreadable or empty
// sslrootcert and a pooler host given in the DSN fail sql.Open with a
// *driver.DSNError naming the key (and a *connector.ConfigError through
// errors.As), never the value.
func TestSQLOpenValueErrorsAreDSNErrors(t *testing.T) {
	empty := filepath.Join(t.TempDir(), "Secr3tDir", "empty.pem")
	if err := os.MkdirAll(filepath.Dir(empty), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(empty, []byte("no certificate here"), 0o600); err != nil {
		t.Fatal(err)
	}
	const ep = " lakebase_endpoint=projects/p/branches/b/endpoints/e"
	for _, tc := range []struct {
		dsn, key, value string
		notExist        bool
	}{
		{"sslmode=allow" + ep, "sslmode", "allow", false},
		{"sslmode=Verify-Fu11" + ep, "sslmode", "Verify-Fu11", false},
		{"sslrootcert=/nonexistent/Secr3tDir/ca.pem" + ep, "sslrootcert", "Secr3tDir", true},
		{"sslrootcert='" + empty + "'" + ep, "sslrootcert", "Secr3tDir", false},
		{"host=ep-x-pooler.Secr3t.example.com" + ep, "host", "Secr3t", false},
	} {
		db, err := sql.Open("lakebase", tc.dsn)
		if err == nil {
			db.Close()
			t.Errorf("%q: sql.Open accepted it", tc.dsn)
			continue
		}
		var de *driver.DSNError
		var ce *connector.ConfigError
		if !errors.As(err, &de) || de.Key != tc.key || !errors.As(err, &ce) {
			t.Errorf("%q: want a *DSNError for key %q that is also a *ConfigError, got %T %v", tc.dsn, tc.key, err, err)
			continue
		}
		if strings.Contains(err.Error(), tc.value) {
			t.Errorf("%q: the error quotes the value: %v", tc.dsn, err)
		}
		if tc.notExist && !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%q: errors.Is(err, fs.ErrNotExist) is false: %v", tc.dsn, err)
		}
		t.Logf("%s", err)
	}
}
