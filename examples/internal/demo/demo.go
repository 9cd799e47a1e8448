// Package demo is the setup the examples share: the real workspace when one
// is configured, else the embedded Lakebase emulator.
package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/jackc/pgx/v5"

	"github.com/lakebase-go/lakebase/connector"
	"github.com/lakebase-go/lakebase/lakebasetest"
)

// Env is where an example connects.
type Env struct {
	Config   connector.Config       // ready for connector.New
	Emulator *lakebasetest.Emulator // nil against a real workspace
}

// Real reports whether the environment names a real workspace and database.
func Real() bool {
	return os.Getenv("DATABRICKS_HOST") != "" && (os.Getenv("LAKEBASE_ENDPOINT") != "" || os.Getenv("LAKEBASE_INSTANCE") != "")
}

// Setup returns the connection settings and a function that releases them.
// With no workspace configured it starts the emulator with opts.
func Setup(ctx context.Context, out io.Writer, opts ...lakebasetest.Option) (*Env, func(), error) {
	if Real() {
		fmt.Fprintf(out, "Using the workspace %s (DATABRICKS_HOST).\n", os.Getenv("DATABRICKS_HOST"))
		return &Env{}, func() {}, nil
	}
	fmt.Fprintln(out, "No DATABRICKS_HOST + LAKEBASE_ENDPOINT set: starting the local Lakebase emulator.")
	e, err := lakebasetest.New(ctx, opts...)
	if err != nil {
		return nil, nil, err
	}
	cfg := connector.Config{
		Endpoint:        e.Endpoint(),
		Host:            e.Host(),
		Port:            e.Port(),
		Database:        e.Database(),
		User:            e.ServicePrincipal(),
		SSLRootCert:     e.CAFile(),
		WorkspaceConfig: e.WorkspaceConfig(),
		LookupEnv:       func(string) (string, bool) { return "", false },
	}
	return &Env{Config: cfg, Emulator: e}, func() { _ = e.Close() }, nil
}

// UseSchema makes an example write only in a schema of its own: it says so
// on out before anything is written (against a real workspace the example
// creates real objects) and sets search_path on every connection made from
// e.Config, so unqualified table names land in schema. The example creates
// the schema itself with CreateSchemaSQL(schema) on its first connection;
// PostgreSQL picks a schema on the search_path up as soon as it exists.
func (e *Env) UseSchema(out io.Writer, schema string) {
	where := "the emulator"
	if e.Emulator == nil {
		where = "your workspace's database"
	}
	fmt.Fprintf(out, "This example writes to %s, only in the schema %s (created if missing; remove it with DROP SCHEMA %s CASCADE).\n", where, schema, schema)
	params := make(map[string]string, len(e.Config.RuntimeParams)+1)
	for k, v := range e.Config.RuntimeParams {
		params[k] = v
	}
	params["search_path"] = schema
	e.Config.RuntimeParams = params
}

// CreateSchemaSQL is the statement that creates an example's schema.
func CreateSchemaSQL(schema string) string {
	return "CREATE SCHEMA IF NOT EXISTS " + pgx.Identifier{schema}.Sanitize()
}

// Main runs an example and exits non-zero on error, with install advice
// when PostgreSQL is missing.
func Main(run func(ctx context.Context, out io.Writer) error) {
	if err := run(context.Background(), os.Stdout); err != nil {
		if errors.Is(err, lakebasetest.ErrPostgresNotFound) {
			fmt.Fprintln(os.Stderr, "The local emulator needs the PostgreSQL server binaries (initdb, pg_ctl).")
			fmt.Fprintln(os.Stderr, "Install them with:  sudo apt-get install -y postgresql")
			fmt.Fprintln(os.Stderr, "or set DATABRICKS_HOST and LAKEBASE_ENDPOINT to use a real workspace.")
			os.Exit(1)
		}
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}
