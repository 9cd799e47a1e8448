// Command goose runs goose (github.com/pressly/goose/v3) migrations at
// start-up, the way a service with several replicas does: every replica
// calls Up, and a PostgreSQL session-level advisory lock lets exactly one of
// them apply the pending migrations while the others wait and then find
// nothing to do.
//
// The migrations are SQL files embedded in the binary (migrations/*.sql)
// and run over the *sql.DB of connector.OpenDB, so they log in with a
// current token like any other connection.
//
// Run migrations on the endpoint's direct host (the connector's default),
// never on the "-pooler" host: an advisory lock belongs to a server session,
// and a transaction-mode pooler hands every transaction to whichever server
// session is free, so the lock would neither hold nor be released reliably
// (the pooler also refuses OAuth token logins).
//
// The example writes only in the schema lakebase_go_example_goose (goose's
// version table included).
package main

import (
	"context"
	"embed"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"sync"

	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"

	"github.com/lakebase-go/lakebase/connector"
	"github.com/lakebase-go/lakebase/examples/internal/demo"
)

// Schema is where the example writes.
const Schema = "lakebase_go_example_goose"

// Replicas is how many instances of the service start at once.
const Replicas = 3

//go:embed migrations/*.sql
var migrations embed.FS

func main() { demo.Main(run) }

func run(ctx context.Context, out io.Writer) error {
	env, release, err := demo.Setup(ctx, out)
	if err != nil {
		return err
	}
	defer release()
	env.UseSchema(out, Schema)

	c, err := connector.New(ctx, env.Config)
	if err != nil {
		return err
	}
	db := connector.OpenDB(c)
	defer db.Close()
	// The schema is the example's sandbox, not part of the migrations:
	// goose creates its version table in it before the first migration.
	// (CREATE SCHEMA IF NOT EXISTS is not safe to run concurrently, so it
	// runs once, before the replicas start.)
	if _, err := db.ExecContext(ctx, demo.CreateSchemaSQL(Schema)); err != nil {
		return err
	}

	// Replicas start at once; each opens its own pool and migrates.
	var wg sync.WaitGroup
	applied := make([]int, Replicas)
	errs := make([]error, Replicas)
	for i := range Replicas {
		wg.Go(func() { applied[i], errs[i] = migrate(ctx, env.Config) })
	}
	wg.Wait()
	total := 0
	for i := range Replicas {
		if errs[i] != nil {
			return fmt.Errorf("replica %d: %w", i+1, errs[i])
		}
		total += applied[i]
	}
	fmt.Fprintf(out, "%d replicas ran the migrations at start-up: %d migrations applied in total (each exactly once)\n", Replicas, total)

	var version int64
	if err := db.QueryRowContext(ctx, "SELECT max(version_id) FROM goose_db_version WHERE is_applied").Scan(&version); err != nil {
		return err
	}
	if _, err := db.ExecContext(ctx, "INSERT INTO accounts (name, email) VALUES ($1, $2)", "ada", "ada@example.com"); err != nil {
		return err
	}
	var n int
	if err := db.QueryRowContext(ctx, "SELECT count(*) FROM accounts WHERE email IS NOT NULL").Scan(&n); err != nil {
		return err
	}
	fmt.Fprintf(out, "schema version %d; %d account(s) with an email\n", version, n)
	return nil
}

// migrate is what one replica runs at start-up. It returns how many
// migrations this replica applied.
func migrate(ctx context.Context, cfg connector.Config) (int, error) {
	c, err := connector.New(ctx, cfg)
	if err != nil {
		return 0, err
	}
	db := connector.OpenDB(c)
	defer db.Close()
	// goose's default lock id is one per database; this example takes its
	// own so that it never waits for (or blocks) another application's
	// migrations in the same database. A waiting replica polls every
	// second, for at most a minute.
	locker, err := lock.NewPostgresSessionLocker(
		lock.WithLockID(int64(crc32.ChecksumIEEE([]byte(Schema)))),
		lock.WithLockTimeout(1, 60),
	)
	if err != nil {
		return 0, err
	}
	fsys, err := fs.Sub(migrations, "migrations")
	if err != nil {
		return 0, err
	}
	p, err := goose.NewProvider(goose.DialectPostgres, db, fsys, goose.WithSessionLocker(locker))
	if err != nil {
		return 0, err
	}
	results, err := p.Up(ctx)
	if err != nil {
		return 0, err
	}
	return len(results), nil
}
