// Command gorm uses GORM through gormadapter.
package main

import (
	"context"
	"fmt"
	"io"

	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/lakebase-go/lakebase/examples/internal/demo"
	"github.com/lakebase-go/lakebase/gormadapter"
)

// Todo is the example model.
type Todo struct {
	ID    uint `gorm:"primaryKey"`
	Title string
	Done  bool
}

// Schema is where the example writes.
const Schema = "lakebase_go_example_gorm"

func main() { demo.Main(run) }

func run(ctx context.Context, out io.Writer) error {
	env, release, err := demo.Setup(ctx, out)
	if err != nil {
		return err
	}
	defer release()
	env.UseSchema(out, Schema)
	gdb, err := gormadapter.OpenConfig(ctx, env.Config, gormadapter.WithGormConfig(&gorm.Config{Logger: logger.Discard}))
	if err != nil {
		return err
	}
	sqlDB, _ := gdb.DB()
	defer sqlDB.Close() // closes the connector and stops its refresh
	if err := gdb.WithContext(ctx).Exec(demo.CreateSchemaSQL(Schema)).Error; err != nil {
		return err
	}
	if err := gdb.WithContext(ctx).AutoMigrate(&Todo{}); err != nil {
		return err
	}
	for _, title := range []string{"buy milk", "rotate tokens"} {
		if err := gdb.WithContext(ctx).Create(&Todo{Title: title}).Error; err != nil {
			return err
		}
	}
	var todos []Todo
	if err := gdb.WithContext(ctx).Order("id").Find(&todos).Error; err != nil {
		return err
	}
	for _, t := range todos {
		fmt.Fprintf(out, "todo %d: %s\n", t.ID, t.Title)
	}
	return nil
}
