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
	"sync/atomic"
	"syscall"
	"time"
)

// Limits of the transport NewTransport returns.
const (
	// MaxIdleConnsPerHost is the number of idle keep-alive connections kept
	// to the workspace.
	MaxIdleConnsPerHost = 8
	// IdleConnTimeout closes an idle keep-alive connection.
	IdleConnTimeout = 90 * time.Second
)

// NewTransport returns an HTTP transport meant to be shared by many
// short-lived clients (one per end user's request), so that they reuse
// keep-alive connections instead of each opening its own, with a bounded
// number of idle connections. Its owner calls CloseIdleConnections when
// done.
func NewTransport() *http.Transport {
	t := newTransport()
	t.MaxIdleConns = 2 * MaxIdleConnsPerHost
	t.MaxIdleConnsPerHost = MaxIdleConnsPerHost
	t.IdleConnTimeout = IdleConnTimeout
	t.TLSHandshakeTimeout = 10 * time.Second
	return t
}

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

// boundTransport fails requests in words the SDK does not retry on, and
// ends them with the innermost bound context.
type boundTransport struct {
	base http.RoundTripper
	user http.RoundTripper // the caller's transport, or nil

	mu      sync.Mutex
	bound   []*binding // innermost last
	lastErr error
}

type binding struct{ ctx context.Context }

func (t *boundTransport) bind(ctx context.Context) func() {
	b := &binding{ctx}
	t.mu.Lock()
	t.bound = append(t.bound, b)
	t.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			t.mu.Lock()
			defer t.mu.Unlock()
			for i := len(t.bound) - 1; i >= 0; i-- {
				if t.bound[i] == b {
					t.bound = append(t.bound[:i], t.bound[i+1:]...)
					return
				}
			}
		})
	}
}

func (t *boundTransport) current() *binding {
	t.mu.Lock()
	defer t.mu.Unlock()
	if n := len(t.bound); n > 0 {
		return t.bound[n-1]
	}
	return nil
}

// isBound reports whether b has not been undone.
func (t *boundTransport) isBound(b *binding) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, x := range t.bound {
		if x == b {
			return true
		}
	}
	return false
}

func (t *boundTransport) record(err error) {
	t.mu.Lock()
	t.lastErr = err
	t.mu.Unlock()
}

func (t *boundTransport) cause(err error) error {
	t.mu.Lock()
	last := t.lastErr
	t.mu.Unlock()
	if last != nil && !errors.Is(err, last) {
		return &NetworkError{Err: last, ctxErr: err}
	}
	return err
}

func (t *boundTransport) closeIdle() {
	if tr, ok := t.base.(interface{ CloseIdleConnections() }); ok {
		tr.CloseIdleConnections()
	}
}

// RoundTrip implements http.RoundTripper.
func (t *boundTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	b := t.current()
	if b == nil {
		resp, err := t.base.RoundTrip(req)
		if err != nil {
			t.record(err)
			return nil, &NetworkError{Err: err, opaque: true}
		}
		return resp, nil
	}
	if b.ctx.Err() != nil {
		return nil, errOperationOver
	}
	ctx, cancel := context.WithCancel(req.Context())
	var ended atomic.Bool
	stop := context.AfterFunc(b.ctx, func() {
		// Only while b is bound: an operation that shares the client
		// (a token fetch beside a look-up) undoes its binding before its
		// ctx ends, and must not end the requests that started under it.
		if t.isBound(b) {
			ended.Store(true)
			cancel()
		}
	})
	resp, err := t.base.RoundTrip(req.WithContext(ctx))
	if err != nil {
		stop()
		cancel()
		if ended.Load() {
			return nil, errOperationOver
		}
		t.record(err)
		return nil, &NetworkError{Err: err, opaque: true}
	}
	resp.Body = &cancelBody{ReadCloser: resp.Body, stop: stop, cancel: cancel}
	return resp, nil
}

// errOperationOver fails every request made after the bound context ended.
// It deliberately wraps nothing: the SDK's retry loops (some run with
// context.Background()) retry errors that unwrap to refused connections or
// timeouts — context.DeadlineExceeded is a net.Error timeout too — and must
// give up at once. Callers learn the cause from Client.Cause.
var errOperationOver = errors.New("the time for talking to the workspace has run out")

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

// NetworkError is a failure to talk to the workspace. Its text names the
// kind of failure in words the SDK's retry loops do not match, and the
// errors the SDK hands it through (from the transport) unwrap only to what
// no retry can fix — a certificate that cannot be verified, a host name
// that does not exist — so that the SDK gives up at once and the caller's
// own retry policy decides. As a net.Error it is never a timeout (the SDK
// retries those) and always temporary.
type NetworkError struct {
	Err    error // the network failure
	ctxErr error // the caller's context error, when it ended first
	opaque bool  // from the transport: unwraps only to unretryable causes
}

var _ net.Error = (*NetworkError)(nil)

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

// Unwrap returns the network failure and the context error; for an error
// from the transport only a certificate or unknown-host failure.
func (e *NetworkError) Unwrap() []error {
	var out []error
	if e.Err != nil && (!e.opaque || isCert(e.Err) || isNotFound(e.Err)) {
		out = append(out, e.Err)
	}
	if e.ctxErr != nil {
		out = append(out, e.ctxErr)
	}
	return out
}

// Permanent reports whether the failure cannot pass by itself: a host name
// that does not exist or a certificate that cannot be verified.
func (e *NetworkError) Permanent() bool { return isNotFound(e.Err) || isCert(e.Err) }

// Timeout implements net.Error: always false, so that no SDK retry loop
// takes it for a timeout.
func (e *NetworkError) Timeout() bool { return false }

// Temporary implements net.Error: a network failure may pass.
func (e *NetworkError) Temporary() bool { return true }

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

// NewNetworkErrorForTest returns the error the transport reports for err
// (for tests of other packages' classifiers).
func NewNetworkErrorForTest(err error) *NetworkError { return &NetworkError{Err: err, opaque: true} }
