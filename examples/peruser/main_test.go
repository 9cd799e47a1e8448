package main

import (
	"testing"

	"github.com/lakebase-go/lakebase/examples/internal/demo"
)

func TestRun(t *testing.T) {
	demo.Expect(t, demo.RunTest(t, run),
		"ada@example.com sees 1 todo(s): ada@example.com's first todo\n",
		"grace@example.com sees 1 todo(s): grace@example.com's first todo\n",
		"the service principal (admin route) sees 2 todos",
		"without identity headers gets 401",
		"ada's email with grace's token: GET /todos as ada@example.com: 403 Forbidden")
}
