// Command otel prints the library's telemetry with the OpenTelemetry stdout
// exporters: token fetch spans from the token source and query spans from
// otelsql.
package main

import (
	"context"
	"fmt"
	"io"

	"go.opentelemetry.io/otel/exporters/stdout/stdoutmetric"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/lakebase-go/lakebase/connector"
	"github.com/lakebase-go/lakebase/examples/internal/demo"
)

func main() { demo.Main(run) }

func run(ctx context.Context, out io.Writer) error {
	env, release, err := demo.Setup(ctx, out)
	if err != nil {
		return err
	}
	defer release()
	texp, err := stdouttrace.New(stdouttrace.WithWriter(out))
	if err != nil {
		return err
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(texp))
	mexp, err := stdoutmetric.New(stdoutmetric.WithWriter(out))
	if err != nil {
		return err
	}
	reader := sdkmetric.NewPeriodicReader(mexp)
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))

	cfg := env.Config
	cfg.Telemetry, cfg.TracerProvider, cfg.MeterProvider = true, tp, mp
	c, err := connector.New(ctx, cfg)
	if err != nil {
		return err
	}
	db := connector.OpenDB(c)
	for i := 0; i < 3; i++ {
		var n int
		if err := db.QueryRowContext(ctx, "SELECT $1::int * 2", i).Scan(&n); err != nil {
			return err
		}
	}
	if err := db.Close(); err != nil {
		return err
	}
	fmt.Fprintln(out, "--- flushing telemetry")
	if err := mp.Shutdown(ctx); err != nil {
		return err
	}
	return tp.Shutdown(ctx)
}
