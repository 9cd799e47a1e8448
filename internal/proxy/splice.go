package proxy

import (
	"io"
	"sync"
	"sync/atomic"
)

// Relay buffers. An idle session blocks in Read on both sides, so what a
// blocked Read holds is what an idle session costs: each relay reads into
// a small buffer of its own and borrows a large one from a pool only while
// reads keep filling the buffer (a COPY, a large result), returning it at
// the first short read.
const (
	smallBuf = 2 << 10
	largeBuf = 32 << 10
)

var largePool = sync.Pool{New: func() any { b := make([]byte, largeBuf); return &b }}

// relay copies src to dst until src ends or either side fails; it returns
// the read error (nil at EOF) or the write error that ended it. Every byte
// read is written before the next read, so when the backend ends a session
// its last message (a FATAL) reaches the client.
func relay(dst io.Writer, src io.Reader, n *atomic.Int64, tail *tailBytes) (readErr, writeErr error) {
	var small [smallBuf]byte
	buf := small[:]
	var large *[]byte
	defer func() {
		if large != nil {
			largePool.Put(large)
		}
	}()
	for {
		k, rerr := src.Read(buf)
		if k > 0 {
			if tail != nil {
				tail.add(buf[:k])
			}
			w, werr := dst.Write(buf[:k])
			n.Add(int64(w))
			if werr != nil {
				return nil, werr
			}
			if w != k {
				return nil, io.ErrShortWrite
			}
		}
		if rerr != nil {
			if rerr == io.EOF {
				return nil, nil
			}
			return rerr, nil
		}
		switch {
		case large == nil && k == len(buf):
			large = largePool.Get().(*[]byte)
			buf = *large
		case large != nil && k <= smallBuf:
			largePool.Put(large)
			large = nil
			buf = small[:]
		}
	}
}

// terminate is the frontend's Terminate message: 'X' and length 4.
var terminate = [5]byte{'X', 0, 0, 0, 4}

// tailBytes keeps the last five bytes a client sent, to tell a clean
// close (Terminate last) from a client that vanished.
type tailBytes struct {
	b [5]byte
	n int
}

func (t *tailBytes) add(p []byte) {
	if len(p) >= 5 {
		copy(t.b[:], p[len(p)-5:])
		t.n = 5
		return
	}
	keep := min(t.n, 5-len(p))
	copy(t.b[:], t.b[t.n-keep:t.n])
	copy(t.b[keep:], p)
	t.n = keep + len(p)
}

func (t *tailBytes) isTerminate() bool { return t.n == 5 && t.b == terminate }
