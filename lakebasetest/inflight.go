package lakebasetest

import (
	"bufio"
	"errors"
	"net"
	"net/http"
	"sync"
)

// inflightTracker counts the calls of each route that the fake API has
// received and not yet answered, and the most there were at once.
type inflightTracker struct {
	mu   sync.Mutex
	now  map[Route]int64
	peak map[Route]int64
}

// inflightCall is one call being answered; end is idempotent.
type inflightCall struct {
	t    *inflightTracker
	r    Route
	once sync.Once
}

func (t *inflightTracker) begin(r Route) *inflightCall {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.now == nil {
		t.now, t.peak = map[Route]int64{}, map[Route]int64{}
	}
	t.now[r]++
	t.peak[r] = max(t.peak[r], t.now[r])
	return &inflightCall{t: t, r: r}
}

func (c *inflightCall) end() {
	c.once.Do(func() {
		c.t.mu.Lock()
		c.t.now[c.r]--
		c.t.mu.Unlock()
	})
}

// answerWriter ends its call as soon as the answer starts: a client cannot
// see a response before that, so a client that waits for its answers
// before sending more is never counted twice.
type answerWriter struct {
	http.ResponseWriter
	call *inflightCall
}

func (w *answerWriter) WriteHeader(code int) {
	w.call.end()
	w.ResponseWriter.WriteHeader(code)
}

func (w *answerWriter) Write(b []byte) (int, error) {
	w.call.end()
	return w.ResponseWriter.Write(b)
}

// Hijack supports FaultDropConnection.
func (w *answerWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	w.call.end()
	if hj, ok := w.ResponseWriter.(http.Hijacker); ok {
		return hj.Hijack()
	}
	return nil, nil, errors.New("lakebasetest: the response writer cannot be hijacked")
}

// InFlightPeak returns the most calls of r the fake workspace API was
// answering at the same time (received, answer not started) since the
// emulator started or ResetInFlightPeak.
func (e *Emulator) InFlightPeak(r Route) int64 {
	t := &e.api.inflight
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.peak[r]
}

// ResetInFlightPeak sets every route's peak to the calls in flight now.
func (e *Emulator) ResetInFlightPeak() {
	t := &e.api.inflight
	t.mu.Lock()
	defer t.mu.Unlock()
	for r := range t.peak {
		t.peak[r] = t.now[r]
	}
}
