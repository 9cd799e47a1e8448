package demo

import (
	"bytes"
	"context"
	"io"
	"strings"
	"testing"
)

// RunTest runs an example against the emulator (whatever the environment
// says) and returns its output. It fails the test on an error or if an
// emulator token ("lbt_...") was printed.
func RunTest(t *testing.T, run func(ctx context.Context, out io.Writer) error) string {
	t.Helper()
	t.Setenv("DATABRICKS_HOST", "")
	var out bytes.Buffer
	if err := run(t.Context(), &out); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if strings.Contains(out.String(), "lbt_") {
		t.Error("a token value was printed")
	}
	return out.String()
}

// Expect fails the test unless s contains every want.
func Expect(t *testing.T, s string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(s, w) {
			t.Errorf("output lacks %q:\n%s", w, s)
		}
	}
}
