package driver_test

import (
	"context"
	"database/sql"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lakebase-go/lakebase/connector"
	"github.com/lakebase-go/lakebase/lakebasetest"
)

// TestFirstConnectBoundedByContext: sql.Open never touches the network; the
// first PingContext against an unreachable workspace returns within its ctx
// with a *connector.ConfigError naming DATABRICKS_HOST.
func TestFirstConnectBoundedByContext(t *testing.T) {
	home := t.TempDir()
	t.Setenv("HOME", home)
	t.Setenv("DATABRICKS_CONFIG_FILE", filepath.Join(home, "none.cfg"))
	for _, k := range []string{"PGHOST", "PGUSER", "DATABRICKS_CLIENT_ID", "DATABRICKS_CLIENT_SECRET", "DATABRICKS_CONFIG_PROFILE", "PGSSLMODE", "PGSSLROOTCERT"} {
		t.Setenv(k, "")
		os.Unsetenv(k)
	}
	for name, url := range map[string]string{"refusing": lakebasetest.RefusingWorkspaceURL(t), "silent": lakebasetest.SilentWorkspaceURL(t)} {
		t.Run(name, func(t *testing.T) {
			t.Setenv("DATABRICKS_HOST", url)
			t.Setenv("DATABRICKS_TOKEN", "dapi-test")
			db, err := sql.Open("lakebase", "lakebase_endpoint=projects/p/branches/b/endpoints/e")
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
			defer cancel()
			start := time.Now()
			err = db.PingContext(ctx)
			took := time.Since(start)
			var ce *connector.ConfigError
			if !errors.As(err, &ce) || !strings.Contains(ce.Setting, "DATABRICKS_HOST") {
				t.Errorf("want a *connector.ConfigError naming DATABRICKS_HOST, got %T %v", err, err)
			}
			if took > 2500*time.Millisecond {
				t.Errorf("first ping took %v with a 2 s ctx", took)
			}
		})
	}
}
