package main

import (
	"strings"
	"testing"

	"github.com/lakebase-go/lakebase/examples/internal/demo"
)

func TestRun(t *testing.T) {
	out := demo.RunTest(t, run)
	demo.Expect(t, out,
		"only in the schema "+Schema,
		`bun: book "The Go Programming Language" by Donovan, Kernighan (in `+Schema+`.books)`,
		`bun: book "PostgreSQL: Up and Running" by Obe, Hsu (in `+Schema+`.books)`)
	if strings.Index(out, "only in the schema") > strings.Index(out, "bun: book") {
		t.Errorf("the example wrote before saying where:\n%s", out)
	}
}
