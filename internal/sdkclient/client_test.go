package sdkclient

import (
	"context"
	"crypto/x509"
	"errors"
	"net"
	"net/http"
	"net/url"
	"os"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/databricks/databricks-sdk-go/config"
	"go.uber.org/goleak"

	"github.com/lakebase-go/lakebase/internal/leaktest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, leaktest.Options()...) }

// TestBuildCopiesEverySetting: Build works on a copy holding every exported
// setting of the caller's config (rate limit, timeouts, auth, profile, ...)
// and changes nothing in the caller's.
func TestBuildCopiesEverySetting(t *testing.T) {
	cfg := &config.Config{
		Host: "https://example.cloud.databricks.com", Token: "dapi-x", AuthType: "pat", Profile: "p",
		RateLimitPerSecond: 3, HTTPTimeoutSeconds: 7, RetryTimeoutSeconds: 11, DebugTruncateBytes: 5,
		ClientID: "id", ClientSecret: "secret", Credentials: config.PatCredentials{},
	}
	cp := copyConfig(cfg)
	src, dst := reflect.ValueOf(cfg).Elem(), reflect.ValueOf(cp).Elem()
	for i := 0; i < src.NumField(); i++ {
		f := src.Type().Field(i)
		if !f.IsExported() || f.Type.Kind() == reflect.Func {
			continue
		}
		if !reflect.DeepEqual(src.Field(i).Interface(), dst.Field(i).Interface()) {
			t.Errorf("%s not copied: %v != %v", f.Name, src.Field(i), dst.Field(i))
		}
	}
	os.Setenv("DATABRICKS_CONFIG_FILE", t.TempDir()+"/none")
	defer os.Unsetenv("DATABRICKS_CONFIG_FILE")
	cfg.Profile = ""
	cfg.HostMetadataResolver = func(context.Context, string) (*config.HostMetadata, error) { return nil, nil }
	c, err := Build(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if cfg.HTTPTransport != nil {
		t.Errorf("Build set the caller's transport: %T", cfg.HTTPTransport)
	}
	if c.Config == cfg || c.Config.RateLimitPerSecond != 3 || c.Config.HTTPTimeoutSeconds != 7 {
		t.Errorf("the client's config: %+v", c.Config)
	}
	if s := c.Settings(); s.HTTPTransport != nil || s.Host != cfg.Host || s == c.Config {
		t.Errorf("Settings: %+v", s)
	}
}

// TestNetworkErrorsInvisibleToSDKRetries: what the transport hands the SDK
// matches none of the SDK's retry predicates (errors.Is ECONNREFUSED or
// ECONNRESET, a net.Error timeout, a *url.Error whose text names a refused
// or reset connection, an i/o timeout, a TLS handshake timeout), while a
// certificate or unknown-host failure stays reachable with errors.As.
func TestNetworkErrorsInvisibleToSDKRetries(t *testing.T) {
	sdkWords := []string{"connection reset by peer", "TLS handshake timeout", "connection refused", "Unexpected error", "i/o timeout"}
	opErr := func(errno syscall.Errno) error {
		return &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", errno)}
	}
	cases := []struct {
		name string
		err  error
		want string
	}{
		{"refused", opErr(syscall.ECONNREFUSED), "refuses connections"},
		{"reset", opErr(syscall.ECONNRESET), "reset the connection"},
		{"timeout", &net.OpError{Op: "read", Net: "tcp", Err: timeoutErr{}}, "did not answer in time"},
		{"deadline", context.DeadlineExceeded, "did not answer in time"},
		{"other", errors.New("Unexpected error from the proxy"), "cannot reach the workspace"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ne := &NetworkError{Err: tc.err, opaque: true}
			wrapped := &url.Error{Op: "Post", URL: "https://w/oidc/v1/token", Err: ne}
			if errors.Is(wrapped, syscall.ECONNREFUSED) || errors.Is(wrapped, syscall.ECONNRESET) || errors.Is(wrapped, context.DeadlineExceeded) {
				t.Error("unwraps to an error the SDK retries")
			}
			var netErr net.Error
			if errors.As(wrapped, &netErr) && netErr.Timeout() {
				t.Error("is a net.Error timeout")
			}
			for _, w := range sdkWords {
				if strings.Contains(wrapped.Error(), w) {
					t.Errorf("text %q contains %q", wrapped.Error(), w)
				}
			}
			if !strings.Contains(ne.Error(), tc.want) {
				t.Errorf("text %q does not say %q", ne.Error(), tc.want)
			}
			// For our own callers, Cause keeps the whole failure.
			full := &NetworkError{Err: tc.err, ctxErr: context.Canceled}
			if !errors.Is(full, tc.err) || !errors.Is(full, context.Canceled) {
				t.Error("Cause's error lost its chain")
			}
		})
	}
	cert := &NetworkError{Err: x509.UnknownAuthorityError{}, opaque: true}
	var ua x509.UnknownAuthorityError
	if !errors.As(cert, &ua) {
		t.Error("a certificate failure is not reachable")
	}
	dns := &NetworkError{Err: &net.DNSError{Err: "no such host", Name: "x.invalid", IsNotFound: true}, opaque: true}
	var de *net.DNSError
	if !errors.As(dns, &de) {
		t.Error("an unknown host is not reachable")
	}
}

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

// TestBindEndsRequests: a request the SDK makes with context.Background()
// while the client is bound ends with the bound ctx; after the bound ctx
// ended, requests fail at once; unbinding restores the request's own ctx.
func TestBindEndsRequests(t *testing.T) {
	block := make(chan struct{})
	base := roundTripFunc(func(r *http.Request) (*http.Response, error) {
		select {
		case <-r.Context().Done():
			return nil, r.Context().Err()
		case <-block:
			return &http.Response{StatusCode: 200, Body: http.NoBody}, nil
		}
	})
	defer close(block)
	tr := &boundTransport{base: base}
	ctx, cancel := context.WithCancel(t.Context())
	unbind := tr.bind(ctx)
	errc := make(chan error, 1)
	go func() {
		req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, "http://w/", nil)
		_, err := tr.RoundTrip(req)
		errc <- err
	}()
	cancel()
	if err := <-errc; !errors.Is(err, errOperationOver) {
		t.Errorf("a bound request after its ctx ended: %v", err)
	}
	req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, "http://w/", nil)
	if _, err := tr.RoundTrip(req); !errors.Is(err, errOperationOver) {
		t.Errorf("a request while bound to an ended ctx: %v", err)
	}
	unbind()
	unbind() // idempotent
	rctx, rcancel := context.WithCancel(t.Context())
	rcancel()
	req, _ = http.NewRequestWithContext(rctx, http.MethodGet, "http://w/", nil)
	_, err := tr.RoundTrip(req)
	var ne *NetworkError
	if !errors.As(err, &ne) || errors.Is(err, context.Canceled) {
		t.Errorf("an unbound request: want an opaque *NetworkError, got %v", err)
	}
}

// TestUndoneBindingEndsNoRequest: two operations share a client (a token
// fetch beside a host look-up). A request that started while the other's
// binding was innermost is not ended when that operation undoes its
// binding and then its ctx ends; it ends with its own.
func TestUndoneBindingEndsNoRequest(t *testing.T) {
	started, block := make(chan struct{}), make(chan struct{})
	base := roundTripFunc(func(r *http.Request) (*http.Response, error) {
		close(started)
		select {
		case <-r.Context().Done():
			return nil, r.Context().Err()
		case <-block:
			return &http.Response{StatusCode: 200, Body: http.NoBody}, nil
		}
	})
	tr := &boundTransport{base: base}
	outer := tr.bind(t.Context()) // the look-up
	defer outer()
	fetchCtx, fetchDone := context.WithCancel(t.Context())
	unbindFetch := tr.bind(fetchCtx) // the fetch, innermost
	errc := make(chan error, 1)
	go func() {
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://w/", nil)
		resp, err := tr.RoundTrip(req)
		if err == nil {
			_ = resp.Body.Close()
		}
		errc <- err
	}()
	<-started
	unbindFetch() // the fetch ends: unbound first, then its ctx
	fetchDone()
	// Negative evidence only (the pass path waits for nothing): before
	// the fix, the ended fetch ctx cancelled the request within
	// microseconds.
	select {
	case err := <-errc:
		t.Fatalf("the look-up's request ended with the finished fetch: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	close(block)
	if err := <-errc; err != nil {
		t.Errorf("the look-up's request was ended by the finished fetch: %v", err)
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
