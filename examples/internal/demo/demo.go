// Package demo is the setup the examples share: the real workspace when one
// is configured, else the embedded Lakebase emulator.
package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

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
	w, err := e.WorkspaceClient()
	if err != nil {
		_ = e.Close()
		return nil, nil, err
	}
	cfg := connector.Config{
		Endpoint:    e.Endpoint(),
		Host:        e.Host(),
		Port:        e.Port(),
		Database:    e.Database(),
		User:        e.ServicePrincipal(),
		SSLRootCert: e.CAFile(),
		Workspace:   w,
		LookupEnv:   func(string) (string, bool) { return "", false },
	}
	return &Env{Config: cfg, Emulator: e}, func() { _ = e.Close() }, nil
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
