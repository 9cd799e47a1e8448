// Command ent uses ent (entgo.io/ent) over the connector:
//
//	drv := entsql.OpenDB(dialect.Postgres, connector.OpenDB(c))
//	client := ent.NewClient(ent.Driver(drv))
//	defer client.Close() // closes the *sql.DB, which closes the connector
//
// The client in ./ent is generated from ./ent/schema by ent's code
// generator (go generate ./ent); the generated code is committed, as ent
// projects do. ent only sees a *sql.DB, so every new connection logs in with
// a current token. The example writes only in the schema
// lakebase_go_example_ent (ent's automatic migration creates the table
// there).
package main

import (
	"context"
	"fmt"
	"io"

	"entgo.io/ent/dialect"
	entsql "entgo.io/ent/dialect/sql"

	"github.com/lakebase-go/lakebase/connector"
	"github.com/lakebase-go/lakebase/examples/ent/ent"
	"github.com/lakebase-go/lakebase/examples/ent/ent/todo"
	"github.com/lakebase-go/lakebase/examples/internal/demo"
)

// Schema is where the example writes.
const Schema = "lakebase_go_example_ent"

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
	drv := entsql.OpenDB(dialect.Postgres, db)
	client := ent.NewClient(ent.Driver(drv))
	defer client.Close()

	if _, err := db.ExecContext(ctx, demo.CreateSchemaSQL(Schema)); err != nil {
		return err
	}
	if err := client.Schema.Create(ctx); err != nil { // ent's automatic migration
		return fmt.Errorf("ent migration: %w", err)
	}
	for _, title := range []string{"write the schema", "run go generate", "ship it"} {
		if _, err := client.Todo.Create().SetTitle(title).Save(ctx); err != nil {
			return err
		}
	}
	n, err := client.Todo.Update().Where(todo.TitleIn("write the schema", "run go generate")).SetDone(true).Save(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "ent: marked %d todos done\n", n)
	open, err := client.Todo.Query().Where(todo.Done(false)).Order(ent.Asc(todo.FieldID)).All(ctx)
	if err != nil {
		return err
	}
	for _, t := range open {
		fmt.Fprintf(out, "ent: still open: %q\n", t.Title)
	}
	var schema string
	if err := db.QueryRowContext(ctx, "SELECT table_schema FROM information_schema.tables WHERE table_name = 'todos' AND table_schema = current_schema()").Scan(&schema); err != nil {
		return fmt.Errorf("ent: the todos table is not in the example's schema: %w", err)
	}
	fmt.Fprintf(out, "ent: table %s.todos\n", schema)
	return nil
}
