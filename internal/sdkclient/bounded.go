package sdkclient

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"syscall"
	"time"

	"github.com/databricks/databricks-sdk-go"
	"github.com/databricks/databricks-sdk-go/config"
)

// Bounded is a workspace client whose HTTP requests, until Release is
// called, are bound by a startup context as well as by their own. The SDK
// makes some requests with context.Background() (the host-metadata probe,
// OAuth discovery and token exchange) and retries refused connections for
// up to five minutes; while bound, every request ends when the startup
// context does. Network failures are always reported in words the SDK does
// not retry on, so it gives up at once and the caller's own retry policy
// (the token cache's backoff) decides.
type Bounded struct {
	Client *databricks.WorkspaceClient
	t      *boundTransport
}

// Build builds a workspace client from cfg (nil: the SDK's unified
// authentication from the environment and profiles) bound by ctx. Build
// returns when the client is built or ctx is done, whichever comes first;
// call Release once the start-up requests are over.
func Build(ctx context.Context, cfg *databricks.Config) (*Bounded, error) {
	if cfg == nil {
		cfg = &databricks.Config{}
	}
	t := &boundTransport{base: newTransport()}
	t.bind(ctx)
	cfg.HTTPTransport = t
	if cfg.HostMetadataResolver == nil {
		// The SDK probes /.well-known/databricks-config with
		// context.Background(), so its retry loop would sleep on after ctx
		// ends; run the same probe with ctx instead.
		sdkCfg := (*config.Config)(cfg)
		cfg.HostMetadataResolver = func(_ context.Context, host string) (*config.HostMetadata, error) {
			return sdkCfg.DefaultHostMetadataResolver()(ctx, host)
		}
	}
	type result struct {
		w   *databricks.WorkspaceClient
		err error
	}
	done := make(chan result, 1)
	go func() {
		w, err := databricks.NewWorkspaceClient(cfg)
		done <- result{w, err}
	}()
	select {
	case r := <-done:
		if r.err != nil {
			t.release()
			return nil, r.err
		}
		if err := ctx.Err(); err != nil {
			t.release()
			return nil, t.cause(err)
		}
		return &Bounded{Client: r.w, t: t}, nil
	case <-ctx.Done():
		// The transport fails every further request at once; the SDK
		// goroutine returns after at most one of its backoff sleeps.
		return nil, t.cause(ctx.Err())
	}
}

// Release unbinds the client: later requests are bounded only by their own
// context and retried as the SDK does.
func (b *Bounded) Release() { b.t.release() }

// Cause returns err joined with the last network failure seen while bound
// (if err does not already carry it), so that a caller whose ctx ended
// learns why the workspace did not answer.
func (b *Bounded) Cause(err error) error { return b.t.cause(err) }

// newTransport mirrors the SDK's default transport.
func newTransport() *http.Transport {
	return &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          100,
		MaxIdleConnsPerHost:   4,
		IdleConnTimeout:       180 * time.Second,
		TLSHandshakeTimeout:   30 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
}

type boundTransport struct {
	base http.RoundTripper

	mu      sync.Mutex
	ctx     context.Context // nil when released
	lastErr error
}

func (t *boundTransport) bind(ctx context.Context) {
	t.mu.Lock()
	t.ctx = ctx
	t.mu.Unlock()
}

func (t *boundTransport) release() {
	t.mu.Lock()
	t.ctx = nil
	t.mu.Unlock()
}

func (t *boundTransport) last() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.lastErr
}

func (t *boundTransport) cause(err error) error {
	if last := t.last(); last != nil && !errors.Is(err, last) {
		return &NetworkError{Err: last, ctxErr: err}
	}
	return err
}

func (t *boundTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	t.mu.Lock()
	bound := t.ctx
	t.mu.Unlock()
	if bound == nil {
		resp, err := t.base.RoundTrip(req)
		if err != nil {
			// Reported in words the SDK does not retry on: the caller
			// (the token cache) has its own bounded retry policy, and the
			// SDK's would retry a refused connection for five minutes.
			return nil, &NetworkError{Err: err}
		}
		return resp, nil
	}
	if bound.Err() != nil {
		return nil, errStartupOver
	}
	ctx, cancel := context.WithCancel(req.Context())
	stop := context.AfterFunc(bound, cancel)
	resp, err := t.base.RoundTrip(req.WithContext(ctx))
	if err != nil {
		stop()
		cancel()
		if bound.Err() != nil {
			return nil, errStartupOver
		}
		ne := &NetworkError{Err: err}
		t.mu.Lock()
		t.lastErr = err
		t.mu.Unlock()
		return nil, ne
	}
	resp.Body = &cancelBody{ReadCloser: resp.Body, stop: stop, cancel: cancel}
	return resp, nil
}

// errStartupOver fails every request made after the startup context ended.
// It deliberately wraps nothing: the SDK's retry loops (some run with
// context.Background()) retry errors that unwrap to refused connections or
// timeouts — context.DeadlineExceeded is a net.Error timeout too — and must
// give up at once. Callers learn the cause from Bounded.Cause.
var errStartupOver = errors.New("the start-up deadline for talking to the workspace has passed")

// cancelBody releases the per-request context when the body is closed.
type cancelBody struct {
	io.ReadCloser
	stop   func() bool
	cancel context.CancelFunc
	once   sync.Once
}

func (b *cancelBody) Close() error {
	err := b.ReadCloser.Close()
	b.once.Do(func() { b.stop(); b.cancel() })
	return err
}

// NetworkError is a failure to talk to the workspace during start-up. Its
// text names the kind of failure in words the SDK does not retry on.
type NetworkError struct {
	Err    error // the network failure, or nil if the context ended first
	ctxErr error
}

// Error implements error.
func (e *NetworkError) Error() string {
	var msg string
	switch {
	case errors.Is(e.Err, syscall.ECONNREFUSED):
		msg = "the workspace host refuses connections"
	case isNotFound(e.Err):
		msg = "the workspace host name does not exist"
	case isCert(e.Err):
		msg = "the workspace's TLS certificate cannot be verified"
	case errors.Is(e.Err, syscall.ECONNRESET):
		msg = "the workspace reset the connection"
	case isTimeout(e.Err):
		msg = "the workspace did not answer in time"
	default:
		msg = "cannot reach the workspace"
	}
	if e.ctxErr != nil {
		msg += " (then " + e.ctxErr.Error() + ")"
	}
	return msg
}

// Unwrap returns the network failure and the context error.
func (e *NetworkError) Unwrap() []error {
	var out []error
	if e.Err != nil {
		out = append(out, e.Err)
	}
	if e.ctxErr != nil {
		out = append(out, e.ctxErr)
	}
	return out
}

func isNotFound(err error) bool {
	var dns *net.DNSError
	return errors.As(err, &dns) && dns.IsNotFound
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func isCert(err error) bool {
	var (
		ua x509.UnknownAuthorityError
		he x509.HostnameError
		ci x509.CertificateInvalidError
		tv *tls.CertificateVerificationError
	)
	return errors.As(err, &ua) || errors.As(err, &he) || errors.As(err, &ci) || errors.As(err, &tv)
}

// Close closes the client's idle connections to the workspace.
func (b *Bounded) Close() {
	if tr, ok := b.t.base.(interface{ CloseIdleConnections() }); ok {
		tr.CloseIdleConnections()
	}
}
