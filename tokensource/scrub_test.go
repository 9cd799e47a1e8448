package tokensource_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/lakebase-go/lakebase/tokensource"
)

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestTruncatedResponseNeverLeaksToken: the SDK embeds a body it cannot
// parse in its error; neither our error, nor the log line, nor the span may
// carry the token it held.
func TestTruncatedResponseNeverLeaksToken(t *testing.T) {
	secret := "eyJhbGciOiJSUzI1NiJ9." + strings.Repeat("c2VjcmV0", 40) + ".SIGNATURE_PART_SECRET"
	for _, tc := range []struct {
		name   string
		status int
		body   string
	}{
		{"truncated 200", 200, `{"token":"` + secret + `","expire_ti`},
		{"html 502", 502, `<html>upstream said ` + secret + `</html>`},
		{"plain 500", 500, `token=` + secret},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w, _, _ := fakeAPI(t, tc.status, func(map[string]any) string { return tc.body })
			fetch, err := tokensource.EndpointFetcher(w.Postgres, "projects/p/branches/b/endpoints/e", tokensource.EndpointOptions{})
			if err != nil {
				t.Fatal(err)
			}
			logs := &lockedBuffer{}
			spans := tracetest.NewSpanRecorder()
			ts := tokensource.New(fetch, tokensource.Options{Mode: tokensource.Lazy, RetrySchedule: []time.Duration{},
				Logger:         slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
				TracerProvider: trace.NewTracerProvider(trace.WithSpanProcessor(spans))})
			defer ts.Close()
			_, err = ts.Token(t.Context())
			if err == nil {
				t.Fatal("Token succeeded")
			}
			seen := []string{err.Error(), fmt.Sprintf("%+v", err), fmt.Sprintf("%#v", err), logs.String()}
			for e := err; e != nil; e = errors.Unwrap(e) {
				seen = append(seen, e.Error())
			}
			for _, s := range spans.Ended() {
				seen = append(seen, s.Status().Description)
				for _, ev := range s.Events() {
					for _, a := range ev.Attributes {
						seen = append(seen, a.Value.String())
					}
				}
			}
			for _, s := range seen {
				for _, part := range []string{secret, "SIGNATURE_PART_SECRET", "c2VjcmV0c2VjcmV0"} {
					if strings.Contains(s, part) {
						t.Fatalf("token leaked: %s", s)
					}
				}
			}
			t.Logf("error: %v", err)
		})
	}
}

func TestScrub(t *testing.T) {
	for in, leak := range map[string]string{
		`Bearer dapi0123456789abcdef0123456789abcdef`:             "dapi0123",
		`{"access_token": "abc.def.ghi", "x":1}`:                  "abc.def",
		`password=hunter2 other`:                                  "hunter2",
		"failed. Request log:\n```\n< {\"token\":\"t0k3n\"}\n```": "t0k3n",
	} {
		if out := tokensource.Scrub(in); strings.Contains(out, leak) {
			t.Errorf("Scrub(%q) = %q keeps %q", in, out, leak)
		}
	}
	const plain = "no token for role \"alice@example.com\": connection refused"
	if got := tokensource.Scrub(plain); got != plain {
		t.Errorf("Scrub changed a harmless message: %q", got)
	}
}

// TestTransientClassification: refused/reset/timeouts are transient; a host
// that does not exist and an untrusted certificate are not.
func TestTransientClassification(t *testing.T) {
	cases := []struct {
		err  error
		want bool
	}{
		{&net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}, true},
		{fmt.Errorf("x: %w", syscall.ECONNRESET), true},
		{context.DeadlineExceeded, true},
		{&net.DNSError{Err: "no such host", Name: "nonexistent.invalid", IsNotFound: true}, false},
		{&net.DNSError{Err: "server misbehaving", Name: "h", IsTemporary: true}, true},
		{fmt.Errorf("tls: %w", x509.UnknownAuthorityError{}), false},
		{fmt.Errorf("tls: %w", x509.HostnameError{Host: "h"}), false},
	}
	for _, tc := range cases {
		if got := tokensource.IsTransient(tc.err); got != tc.want {
			t.Errorf("IsTransient(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

// TestCallerDeadlineCarriesLastFailure: a caller whose ctx ends while
// fetches keep failing learns why they fail.
func TestCallerDeadlineCarriesLastFailure(t *testing.T) {
	cause := &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
	attempted := make(chan struct{}, 100)
	ts := tokensource.New(func(ctx context.Context) (tokensource.Token, error) {
		attempted <- struct{}{}
		return tokensource.Token{}, cause
	}, tokensource.Options{Mode: tokensource.Lazy, RetrySchedule: []time.Duration{time.Millisecond, time.Hour}})
	defer ts.Close()
	ctx, cancel := context.WithCancel(t.Context())
	// Cancel during the second attempt: the first one's failure is on record.
	go func() { <-attempted; <-attempted; cancel() }()
	_, err := ts.Token(ctx)
	if !errors.Is(err, context.Canceled) || !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("want both the ctx error and the fetch failure, got %v", err)
	}
}
