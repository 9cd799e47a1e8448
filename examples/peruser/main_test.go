package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestTwoUsersOverHTTP(t *testing.T) {
	t.Setenv("DATABRICKS_HOST", "")
	var out bytes.Buffer
	if err := run(t.Context(), &out); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	s := out.String()
	for _, want := range []string{
		"ada@example.com sees 1 todo(s): ada@example.com's first todo\n",
		"grace@example.com sees 1 todo(s): grace@example.com's first todo\n",
		"the service principal (admin route) sees 2 todos",
		"without identity headers gets 401",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("output lacks %q:\n%s", want, s)
		}
	}
}
