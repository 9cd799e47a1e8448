package bench

import (
	"bytes"
	"strings"
	"testing"
)

// TestProxyCase runs case 12 (lakebase proxy against direct pgx) at smoke
// size: every row is there with an interval, the COPY rows carry a
// throughput and the memory row a figure; timings are not asserted.
func TestProxyCase(t *testing.T) {
	o := tiny
	o.Cases = []string{"12"}
	var out bytes.Buffer
	rows, err := Compare(t.Context(), &out, o)
	if err != nil {
		t.Fatal(err)
	}
	table := out.String()
	for _, want := range []string{"12a. lakebase proxy: SELECT 1", "12b. lakebase proxy: new client connection", "12c. lakebase proxy: COPY 4 MB in",
		"12d. lakebase proxy: COPY about 4 MB out", "12e. lakebase proxy: memory per idle session, 50 sessions", "MB/s", "KiB per session beyond the backend connection"} {
		if !strings.Contains(table, want) {
			t.Errorf("table lacks %q:\n%s", want, table)
		}
	}
	paired := 0
	for _, r := range rows {
		if r.Est != nil {
			paired++
		}
	}
	if paired != 6 {
		t.Errorf("%d rows with a ratio, want 6 (12a and 12b: TCP and Unix socket; 12c, 12d: TCP)\n%s", paired, table)
	}
	t.Log("\n" + table)
}
