package main

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/lakebase-go/lakebase/examples/internal/demo"
	"github.com/lakebase-go/lakebase/internal/leaktest"
)

// TestMain checks for leaks, ignoring one goroutine per pool that
// dbresolver starts: it gives every source and replica a prepared-statement
// store whose gorm-internal LRU runs an expiry goroutine that never exits
// (gorm v1.31's lru.go: "done channel is never closed").
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, leaktest.Options(goleak.IgnoreTopFunction("gorm.io/gorm/internal/lru.NewLRU[...].func1"))...)
}

// TestRun: the reader is the standby (in recovery, 127.0.0.3) and the
// writer the primary; a replica write fails with 25006; dbresolver runs
// GORM's INSERT on the primary (the row's DEFAULT pg_is_in_recovery() is
// false) and its SELECT on the replica, and Clauses(dbresolver.Write) on
// the primary.
func TestRun(t *testing.T) {
	demo.Expect(t, demo.RunTest(t, run),
		"only in the schema "+Schema,
		"writer: primary at 127.0.0.1, reader: replica at 127.0.0.3",
		"database/sql: note 1 read on the replica (\"hello from the primary\")",
		"a write on the replica fails with SQLSTATE 25006",
		"gorm: INSERT of note 2 ran in recovery: false (the primary)",
		"Clauses(dbresolver.Write) read note 2 at once, in recovery: false (the primary)",
		"gorm: SELECT of note 2 ran in recovery: true (the replica)")
}
