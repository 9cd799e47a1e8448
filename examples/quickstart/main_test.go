package main

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func TestQuickstart(t *testing.T) {
	t.Setenv("DATABRICKS_HOST", "")
	var out bytes.Buffer
	if err := run(t.Context(), &out, 5*time.Second, 2*time.Second); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	s := out.String()
	for _, want := range []string{"starting the local Lakebase emulator", "token rotated", "0 failures", "still works"} {
		if !strings.Contains(s, want) {
			t.Errorf("output lacks %q:\n%s", want, s)
		}
	}
	if strings.Contains(s, "lbt_") {
		t.Error("a token value was printed")
	}
}
