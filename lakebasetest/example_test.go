package lakebasetest_test

import (
	"context"
	"fmt"

	"github.com/lakebase-go/lakebase/lakebasetest"
)

// A program (not a test) starts the emulator with New and closes it.
func ExampleNew() {
	e, err := lakebasetest.New(context.Background())
	if err != nil {
		fmt.Println(err) // wraps ErrPostgresNotFound without PostgreSQL
		return
	}
	defer e.Close()
	fmt.Println(e.Host(), e.Database(), e.Endpoint())
}
