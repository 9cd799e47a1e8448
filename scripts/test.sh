#!/usr/bin/env bash
# The project's test command (README: "Run the tests").
#  1. gofmt and go vet must be clean;
#  2. go test -race ./... (integration tests start their own PostgreSQL);
#  3. every benchmark runs briefly so none can rot (timings are not asserted);
#  4. every fuzz target runs for a few seconds on top of its committed seeds
#     (minimisation off: when -fuzztime ends while the fuzzer is minimising a
#     newly interesting input, go test reports "context deadline exceeded";
#     a real crasher is still reported, just not minimised).
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then
  echo "gofmt needed on:"; echo "$unformatted"; exit 1
fi

echo "== go vet"
go vet ./...

echo "== go test -race ./..."
go test -race -count=1 -timeout 15m ./...

echo "== benchmarks (brief, not asserted)"
go test -run '^$' -bench . -benchtime=100x -count=1 -timeout 10m ./...

if [ "${LAKEBASE_SKIP_FUZZ:-}" != 1 ]; then
  echo "== fuzz targets (${LAKEBASE_FUZZTIME:=5s} each)"
  for pkg in $(go list ./...); do
    dir=$(go list -f '{{.Dir}}' "$pkg")
    for target in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go 2>/dev/null | sed 's/^func //'); do
      echo "-- $pkg $target"
      go test -run '^$' -fuzz "^${target}\$" -fuzztime "$LAKEBASE_FUZZTIME" -fuzzminimizetime 0 "$pkg"
    done
  done
fi
echo "== ok"
