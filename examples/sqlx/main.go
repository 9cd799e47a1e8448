// Command sqlx uses sqlx through sqlxadapter.
package main

import (
	"context"
	"fmt"
	"io"

	"github.com/lakebase-go/lakebase/examples/internal/demo"
	"github.com/lakebase-go/lakebase/sqlxadapter"
)

type note struct {
	ID   int64  `db:"id"`
	Body string `db:"body"`
}

// Schema is where the example writes.
const Schema = "lakebase_go_example_sqlx"

func main() { demo.Main(run) }

func run(ctx context.Context, out io.Writer) error {
	env, release, err := demo.Setup(ctx, out)
	if err != nil {
		return err
	}
	defer release()
	env.UseSchema(out, Schema)
	db, err := sqlxadapter.OpenConfig(ctx, env.Config)
	if err != nil {
		return err
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, demo.CreateSchemaSQL(Schema)); err != nil {
		return err
	}
	if _, err := db.ExecContext(ctx, "CREATE TABLE IF NOT EXISTS sqlx_notes (id bigserial PRIMARY KEY, body text)"); err != nil {
		return err
	}
	if _, err := db.NamedExecContext(ctx, "INSERT INTO sqlx_notes (body) VALUES (:body)", []note{{Body: "named"}, {Body: "exec"}}); err != nil {
		return err
	}
	var notes []note
	if err := db.SelectContext(ctx, &notes, db.Rebind("SELECT id, body FROM sqlx_notes WHERE id > ? ORDER BY id"), 0); err != nil {
		return err
	}
	for _, n := range notes {
		fmt.Fprintf(out, "note %d: %s\n", n.ID, n.Body)
	}
	return nil
}
