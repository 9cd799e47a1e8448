// Command bun uses bun (github.com/uptrace/bun) with its PostgreSQL dialect
// over the connector:
//
//	db := bun.NewDB(connector.OpenDB(c), pgdialect.New())
//	defer db.Close() // closes the *sql.DB, which closes the connector
//
// bun only sees a *sql.DB, so every new connection it opens logs in with a
// current token. The example writes only in the schema
// lakebase_go_example_bun.
package main

import (
	"context"
	"fmt"
	"io"

	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect/pgdialect"

	"github.com/lakebase-go/lakebase/connector"
	"github.com/lakebase-go/lakebase/examples/internal/demo"
)

// Schema is where the example writes.
const Schema = "lakebase_go_example_bun"

// Book is a bun model.
type Book struct {
	bun.BaseModel `bun:"table:books"`

	ID     int64  `bun:"id,pk,autoincrement"`
	Title  string `bun:"title,notnull"`
	Author string `bun:"author,notnull"`
}

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
	db := bun.NewDB(connector.OpenDB(c), pgdialect.New())
	defer db.Close()

	if _, err := db.ExecContext(ctx, demo.CreateSchemaSQL(Schema)); err != nil {
		return err
	}
	if _, err := db.NewCreateTable().Model((*Book)(nil)).IfNotExists().Exec(ctx); err != nil {
		return err
	}
	books := []Book{
		{Title: "The Go Programming Language", Author: "Donovan, Kernighan"},
		{Title: "PostgreSQL: Up and Running", Author: "Obe, Hsu"},
	}
	if _, err := db.NewInsert().Model(&books).Exec(ctx); err != nil { // RETURNING fills the ids
		return err
	}
	var found []Book
	if err := db.NewSelect().Model(&found).Where("id IN (?)", bun.List([]int64{books[0].ID, books[1].ID})).Order("id").Scan(ctx); err != nil {
		return err
	}
	var schema string
	if err := db.NewRaw("SELECT current_schema()").Scan(ctx, &schema); err != nil {
		return err
	}
	for _, b := range found {
		fmt.Fprintf(out, "bun: book %q by %s (in %s.books)\n", b.Title, b.Author, schema)
	}
	return nil
}
