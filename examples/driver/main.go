// Command driver uses sql.Open("lakebase", dsn).
//
// The driver builds its workspace client with the SDK's unified
// authentication, from the environment. Against the emulator this example
// sets DATABRICKS_HOST and DATABRICKS_TOKEN in its own process to point
// there; against a real workspace your environment already has them.
package main

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"os"

	_ "github.com/lakebase-go/lakebase/driver"
	"github.com/lakebase-go/lakebase/examples/internal/demo"
)

func main() { demo.Main(run) }

func run(ctx context.Context, out io.Writer) error {
	env, release, err := demo.Setup(ctx, out)
	if err != nil {
		return err
	}
	defer release()
	dsn := "dbname=databricks_postgres" // the rest comes from LAKEBASE_ENDPOINT, PGHOST, ...
	if e := env.Emulator; e != nil {
		for k, v := range map[string]string{"DATABRICKS_HOST": e.WorkspaceURL(), "DATABRICKS_TOKEN": e.ServicePrincipalToken()} {
			if err := os.Setenv(k, v); err != nil {
				return err
			}
		}
		dsn = fmt.Sprintf("host=%s port=%d dbname=%s user=%s sslrootcert='%s' lakebase_endpoint=%s refresh=lazy",
			e.Host(), e.Port(), e.Database(), e.ServicePrincipal(), e.CAFile(), e.Endpoint())
	}
	db, err := sql.Open("lakebase", dsn)
	if err != nil {
		return err
	}
	defer db.Close() // stops the token refresh
	var user string
	if err := db.QueryRowContext(ctx, "SELECT current_user").Scan(&user); err != nil {
		return err
	}
	fmt.Fprintf(out, "sql.Open(\"lakebase\", ...) connected as %s\n", user)
	return nil
}
