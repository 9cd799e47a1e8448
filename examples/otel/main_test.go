package main

import (
	"testing"

	"github.com/lakebase-go/lakebase/examples/internal/demo"
)

func TestRun(t *testing.T) {
	demo.Expect(t, demo.RunTest(t, run),
		`"Name":"lakebase.token.fetch"`,
		`"Name":"sql.conn.query"`,
		"lakebase.token.fetch.duration",
		"db.client.operation.duration")
}
