package reliability

import (
	"bytes"
	"context"
	"database/sql"
	"log/slog"
	"runtime"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.uber.org/goleak"

	"github.com/lakebase-go/lakebase/internal/leaktest"

	"github.com/lakebase-go/lakebase/connector"
	"github.com/lakebase-go/lakebase/lakebasetest"
	"github.com/lakebase-go/lakebase/tokensource"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, leaktest.Options()...)
}

// capture collects every log line and span a test produces, to search them
// for secrets.
type capture struct {
	mu    sync.Mutex
	logs  bytes.Buffer
	spans *tracetest.SpanRecorder
	tp    *trace.TracerProvider
}

func newCapture(t *testing.T) *capture {
	c := &capture{spans: tracetest.NewSpanRecorder()}
	c.tp = trace.NewTracerProvider(trace.WithSpanProcessor(c.spans))
	t.Cleanup(func() { _ = c.tp.Shutdown(context.Background()) })
	return c
}

func (c *capture) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.logs.Write(p)
}

func (c *capture) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(c, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// text is every log line plus every span name, status, event and attribute.
func (c *capture) text() string {
	c.mu.Lock()
	var b bytes.Buffer
	b.Write(c.logs.Bytes())
	c.mu.Unlock()
	for _, s := range c.spans.Ended() {
		b.WriteString(s.Name() + " " + s.Status().Description + "\n")
		for _, a := range s.Attributes() {
			b.WriteString(string(a.Key) + "=" + a.Value.String() + "\n")
		}
		for _, ev := range s.Events() {
			b.WriteString(ev.Name + "\n")
			for _, a := range ev.Attributes {
				b.WriteString(string(a.Key) + "=" + a.Value.String() + "\n")
			}
		}
	}
	return b.String()
}

// fast is a token policy for 2-6 second tokens.
func fast() tokensource.Options {
	return tokensource.Options{
		EarlyRefresh:       time.Second,
		SafetyMargin:       500 * time.Millisecond,
		AttemptTimeout:     2 * time.Second,
		RetrySchedule:      []time.Duration{50 * time.Millisecond, 100 * time.Millisecond},
		BackgroundRetryMin: 200 * time.Millisecond,
		BackgroundRetryMax: 500 * time.Millisecond,
	}
}

func config(t *testing.T, e *lakebasetest.Emulator, logger *slog.Logger) connector.Config {
	t.Helper()
	w := e.WorkspaceConfig()
	return connector.Config{
		Endpoint:        e.Endpoint(),
		Host:            e.Host(),
		Port:            e.Port(),
		Database:        e.Database(),
		User:            e.ServicePrincipal(),
		SSLRootCert:     e.CAFile(),
		WorkspaceConfig: w,
		Logger:          logger,
		Token:           fast(),
		LookupEnv:       func(string) (string, bool) { return "", false },
	}
}

func open(t *testing.T, cfg connector.Config) (*connector.Connector, *sql.DB) {
	t.Helper()
	c, err := connector.New(t.Context(), cfg)
	if err != nil {
		t.Fatalf("connector.New: %v", err)
	}
	db := sql.OpenDB(c)
	t.Cleanup(func() { _ = db.Close() })
	return c, db
}

// eventually polls cond until it holds or d passes.
func eventually(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// settledGoroutines returns the goroutine count once it stops falling.
func settledGoroutines() int {
	n := runtime.NumGoroutine()
	for i := 0; i < 50; i++ {
		time.Sleep(20 * time.Millisecond)
		m := runtime.NumGoroutine()
		if m >= n {
			return m
		}
		n = m
	}
	return n
}
