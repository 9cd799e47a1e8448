#!/usr/bin/env bash
# The project's test command (README: "Run the tests"). It checks both Go
# modules of the repository: the library (.) and the examples (examples/,
# a module of its own so that example-only dependencies never enter the
# library's go.mod).
#  1. gofmt, go vet and staticcheck (tests included) must be clean, and
#     go.mod/go.sum tidy, in both modules;
#  2. go test -race ./... in both modules (integration tests and examples
#     start their own PostgreSQL);
#  3. every benchmark of the library runs briefly so none can rot (timings
#     are not asserted);
#  4. every fuzz target of the library runs for a few seconds on top of its
#     committed seeds (minimisation off: when -fuzztime ends while the fuzzer
#     is minimising a newly interesting input, go test reports "context
#     deadline exceeded"; a real crasher is still reported, just not
#     minimised).
set -euo pipefail
cd "$(dirname "$0")/.."

modules=(. examples)

# staticcheck is installed at this pinned version when missing (2026.2.2,
# which supports Go 1.25 and 1.26).
STATICCHECK_VERSION="${STATICCHECK_VERSION:-v0.8.2}"
staticcheck_bin() {
  local bin
  for bin in "$(command -v staticcheck 2>/dev/null || true)" "$(go env GOPATH)/bin/staticcheck"; do
    if [ -n "$bin" ] && [ -x "$bin" ] && "$bin" -version 2>/dev/null | grep -q "(${STATICCHECK_VERSION#v})"; then
      echo "$bin"; return
    fi
  done
  echo "installing staticcheck@$STATICCHECK_VERSION" >&2
  GOFLAGS= GOBIN="$(go env GOPATH)/bin" go install "honnef.co/go/tools/cmd/staticcheck@$STATICCHECK_VERSION" >&2
  echo "$(go env GOPATH)/bin/staticcheck"
}

echo "== gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then
  echo "gofmt needed on:"; echo "$unformatted"; exit 1
fi

echo "== go mod tidy -diff"
for m in "${modules[@]}"; do
  (cd "$m" && go mod tidy -diff) || { echo "go.mod/go.sum of module $m are not tidy: run go mod tidy in $m"; exit 1; }
done

echo "== go vet"
for m in "${modules[@]}"; do
  (cd "$m" && go vet ./...)
done

echo "== staticcheck"
staticcheck=$(staticcheck_bin)
"$staticcheck" -version
for m in "${modules[@]}"; do
  (cd "$m" && "$staticcheck" -tests ./...)
done

echo "== go test -race ./... (library)"
go test -race -count=1 -timeout 15m ./...

echo "== go test -race ./... (examples)"
(cd examples && go test -race -count=1 -timeout 10m ./...)

echo "== benchmarks (brief, not asserted)"
go test -run '^$' -bench . -benchtime=100x -count=1 -timeout 10m ./...

if [ "${LAKEBASE_SKIP_FUZZ:-}" != 1 ]; then
  echo "== fuzz targets (${LAKEBASE_FUZZTIME:=5s} each)"
  for pkg in $(go list ./...); do
    dir=$(go list -f '{{.Dir}}' "$pkg")
    for target in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go 2>/dev/null | sed 's/^func //'); do
      echo "-- $pkg $target"
      # go test -fuzz sometimes reports a bare "context deadline exceeded"
      # when -fuzztime ends while a worker is shutting down (no input is
      # failing: nothing is written to testdata). Such a run is repeated
      # once; a real crasher ("Failing input written to ...") fails at once.
      for try in 1 2; do
        if out=$(go test -run '^$' -fuzz "^${target}\$" -fuzztime "$LAKEBASE_FUZZTIME" -fuzzminimizetime 0 "$pkg" 2>&1); then
          echo "$out" | tail -n 1; break
        fi
        echo "$out"
        if [ "$try" = 2 ] || echo "$out" | grep -q "Failing input written" || ! echo "$out" | grep -q "context deadline exceeded"; then
          exit 1
        fi
        echo "-- $target: fuzzing ended with a bare 'context deadline exceeded' (no failing input); running it once more"
      done
    done
  done
fi
echo "== ok"
