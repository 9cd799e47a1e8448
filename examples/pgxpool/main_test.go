package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestRun(t *testing.T) {
	t.Setenv("DATABRICKS_HOST", "")
	var out bytes.Buffer
	if err := run(t.Context(), &out); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	check(t, out.String())
	if strings.Contains(out.String(), "lbt_") {
		t.Error("a token value was printed")
	}
}

func check(t *testing.T, s string) {
	if !strings.Contains(s, "answer 42") {
		t.Errorf("output:\n%s", s)
	}
}
