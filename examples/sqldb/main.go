// Command sqldb uses the connector with plain database/sql.
package main

import (
	"context"
	"fmt"
	"io"

	"github.com/lakebase-go/lakebase/connector"
	"github.com/lakebase-go/lakebase/examples/internal/demo"
)

// Schema is where the example writes.
const Schema = "lakebase_go_example_sqldb"

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
	db := connector.OpenDB(c) // sql.OpenDB(c) works too; db.Close() closes c
	defer db.Close()
	if _, err := db.ExecContext(ctx, demo.CreateSchemaSQL(Schema)); err != nil {
		return err
	}
	if _, err := db.ExecContext(ctx, "CREATE TABLE IF NOT EXISTS notes (id bigserial PRIMARY KEY, body text NOT NULL)"); err != nil {
		return err
	}
	if _, err := db.ExecContext(ctx, "INSERT INTO notes (body) VALUES ($1), ($2)", "hello", "lakebase"); err != nil {
		return err
	}
	rows, err := db.QueryContext(ctx, "SELECT id, body FROM notes ORDER BY id")
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var id int64
		var body string
		if err := rows.Scan(&id, &body); err != nil {
			return err
		}
		fmt.Fprintf(out, "note %d: %s\n", id, body)
	}
	return rows.Err()
}
