package main

import (
	"testing"

	"github.com/lakebase-go/lakebase/examples/internal/demo"
)

func TestRun(t *testing.T) {
	demo.Expect(t, demo.RunTest(t, run),
		"only in the schema "+Schema,
		"todo 2: rotate tokens")
}
