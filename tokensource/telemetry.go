package tokensource

import (
	"context"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
)

// Telemetry names.
const (
	SpanFetch       = "lakebase.token.fetch"
	MetricDuration  = "lakebase.token.fetch.duration"
	MetricFailures  = "lakebase.token.fetch.failures"
	instrumentation = "github.com/lakebase-go/lakebase/tokensource"
)

type telemetry struct {
	tracer   trace.Tracer
	duration metric.Float64Histogram
	failures metric.Int64Counter
	attrs    []attribute.KeyValue
	mset     metric.MeasurementOption
}

func newTelemetry(o Options) *telemetry {
	tp := o.TracerProvider
	if tp == nil {
		tp = otel.GetTracerProvider()
	}
	mp := o.MeterProvider
	if mp == nil {
		mp = otel.GetMeterProvider()
	}
	meter := mp.Meter(instrumentation)
	t := &telemetry{tracer: tp.Tracer(instrumentation)}
	// Instrument creation only fails for invalid names; ours are constant.
	t.duration, _ = meter.Float64Histogram(MetricDuration, metric.WithUnit("s"),
		metric.WithExplicitBucketBoundaries(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
		metric.WithDescription("Duration of Lakebase credential fetch attempts."))
	t.failures, _ = meter.Int64Counter(MetricFailures,
		metric.WithDescription("Failed Lakebase credential fetch attempts."))
	t.attrs = append([]attribute.KeyValue{attribute.String("lakebase.token.mode", o.Mode.String())}, o.Attributes...)
	t.mset = metric.WithAttributes(t.attrs...)
	return t
}

func (t *telemetry) start(ctx context.Context, attempt int) (context.Context, trace.Span) {
	return t.tracer.Start(ctx, SpanFetch, trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(t.attrs...), trace.WithAttributes(attribute.Int("lakebase.token.attempt", attempt)))
}

// end records the outcome of one attempt. It never records the token value.
func (t *telemetry) end(ctx context.Context, span trace.Span, start time.Time, tok Token, err error) {
	defer span.End()
	elapsed := time.Since(start).Seconds()
	if err != nil {
		et := attribute.String("error.type", errorType(err))
		span.SetAttributes(et)
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
		t.duration.Record(context.WithoutCancel(ctx), elapsed, t.mset, metric.WithAttributes(et))
		t.failures.Add(context.WithoutCancel(ctx), 1, t.mset, metric.WithAttributes(et))
		return
	}
	span.SetAttributes(attribute.String("lakebase.token.expiry", tok.Expiry.UTC().Format(time.RFC3339)))
	span.SetStatus(codes.Ok, "")
	t.duration.Record(context.WithoutCancel(ctx), elapsed, t.mset)
}
