// Command sqlc runs sqlc-style typed queries (package store, in the shape
// sqlc generates for pgx/v5) on a pgxpool built from the connector:
//
//	pc, err := c.PoolConfig() // BeforeConnect sets a current token on each new connection
//	pool, err := pgxpool.NewWithConfig(ctx, pc)
//	q := store.New(pool)
//
// The pool, a transaction (q.WithTx(tx)) or a single connection all satisfy
// store.DBTX. The example writes only in the schema
// lakebase_go_example_sqlc.
package main

import (
	"context"
	_ "embed"
	"fmt"
	"io"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/lakebase-go/lakebase/connector"
	"github.com/lakebase-go/lakebase/examples/internal/demo"
	"github.com/lakebase-go/lakebase/examples/sqlc/store"
)

// Schema is where the example writes.
const Schema = "lakebase_go_example_sqlc"

//go:embed schema.sql
var ddl string

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
	defer c.Close() // the pool does not own the connector: close both
	pc, err := c.PoolConfig()
	if err != nil {
		return err
	}
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return err
	}
	defer pool.Close()

	if _, err := pool.Exec(ctx, demo.CreateSchemaSQL(Schema)); err != nil {
		return err
	}
	if _, err := pool.Exec(ctx, ddl); err != nil {
		return err
	}
	q := store.New(pool)
	ken, err := q.CreateAuthor(ctx, store.CreateAuthorParams{Name: "Ken Thompson"})
	if err != nil {
		return err
	}
	// Two writes in one transaction, through the same typed queries.
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		qtx := q.WithTx(tx)
		if _, err := qtx.CreateAuthor(ctx, store.CreateAuthorParams{Name: "Barbara Liskov", Bio: pgtype.Text{String: "CLU, the substitution principle", Valid: true}}); err != nil {
			return err
		}
		return qtx.UpdateAuthorBio(ctx, store.UpdateAuthorBioParams{ID: ken.ID, Bio: pgtype.Text{String: "Unix, UTF-8, Go", Valid: true}})
	})
	if err != nil {
		return err
	}
	got, err := q.GetAuthor(ctx, ken.ID)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "sqlc: author %d is %s (%s)\n", got.ID, got.Name, got.Bio.String)
	authors, err := q.ListAuthors(ctx)
	if err != nil {
		return err
	}
	for _, a := range authors {
		fmt.Fprintf(out, "sqlc: %s: %s\n", a.Name, a.Bio.String)
	}
	var schema string
	if err := pool.QueryRow(ctx, "SELECT current_schema()").Scan(&schema); err != nil {
		return err
	}
	fmt.Fprintf(out, "sqlc: %d authors in %s.authors\n", len(authors), schema)
	return nil
}
