package main

import (
	"context"
	"io"
	"testing"
	"time"

	"github.com/lakebase-go/lakebase/examples/internal/demo"
)

func TestQuickstart(t *testing.T) {
	out := demo.RunTest(t, func(ctx context.Context, w io.Writer) error { return run(ctx, w, 5*time.Second, 2*time.Second) })
	demo.Expect(t, out, "starting the local Lakebase emulator", "token rotated", "0 failures", "still works")
}
