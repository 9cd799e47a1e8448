// Package leaktest holds the goleak options every package's TestMain uses:
// goroutines started by dependencies at init time (not by this library).
package leaktest

import "go.uber.org/goleak"

// Options ignores the OpenCensus view worker that a Databricks SDK
// dependency starts in an init function, and database/sql's connection
// opener, which exits shortly after DB.Close.
func Options(extra ...goleak.Option) []goleak.Option {
	return append([]goleak.Option{
		goleak.IgnoreTopFunction("go.opencensus.io/stats/view.(*worker).start"),
		goleak.IgnoreTopFunction("database/sql.(*DB).connectionOpener"),
	}, extra...)
}
