package main

import (
	"testing"

	"github.com/lakebase-go/lakebase/examples/internal/demo"
)

func TestRun(t *testing.T) {
	demo.Expect(t, demo.RunTest(t, run),
		"only in the schema "+Schema,
		"3 replicas ran the migrations at start-up: 2 migrations applied in total",
		"schema version 2; 1 account(s) with an email")
}
