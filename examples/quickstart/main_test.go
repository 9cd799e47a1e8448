package main

import (
	"bytes"
	"context"
	"io"
	"log"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/lakebase-go/lakebase/examples/internal/demo"
)

func TestQuickstart(t *testing.T) {
	var logs bytes.Buffer
	prev := log.Writer()
	log.SetOutput(&logs) // the Databricks SDK logs through package log
	defer log.SetOutput(prev)
	for _, k := range []string{"DATABRICKS_TOKEN", "DATABRICKS_CONFIG_PROFILE", "PGHOST", "PGPORT", "PGUSER", "PGPASSWORD"} {
		t.Setenv(k, "")
	}
	t.Setenv("HOME", t.TempDir())
	out := demo.RunTest(t, func(ctx context.Context, w io.Writer) error { return run(ctx, w, 5*time.Second, 2*time.Second) })
	demo.Expect(t, out, "starting the local Lakebase emulator", "OAuth M2M", "token rotated", "0 failures", "still works")
	log.SetOutput(prev)
	if strings.Contains(logs.String(), "[WARN]") {
		t.Errorf("the SDK warned:\n%s", logs.String())
	}
	if os.Getenv("DATABRICKS_CLIENT_SECRET") != "" {
		t.Error("the quickstart left the App environment behind")
	}
}
