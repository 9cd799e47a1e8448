package main

import (
	"testing"

	"github.com/lakebase-go/lakebase/examples/internal/demo"
)

func TestRun(t *testing.T) {
	demo.Expect(t, demo.RunTest(t, run),
		"only in the schema "+Schema,
		"is Ken Thompson (Unix, UTF-8, Go)",
		"sqlc: Barbara Liskov: CLU, the substitution principle\nsqlc: Ken Thompson: Unix, UTF-8, Go\n",
		"sqlc: 2 authors in "+Schema+".authors")
}
