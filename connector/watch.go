package connector

import (
	"encoding/binary"
	"net"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/lakebase-go/lakebase/tokensource"
)

// watch returns a net.Conn wrapper that reads along the server's answers to
// a login (until ReadyForQuery or an ErrorResponse) and marks tok refused
// when the server refuses the credential. pgxpool has no hook that sees a
// failed connect; this is how PoolConfig learns of it.
func (p *loginPolicy) watch(tok tokensource.Token) func(net.Conn) net.Conn {
	return func(conn net.Conn) net.Conn {
		return &loginWatcher{Conn: conn, onRefused: func(pgErr *pgconn.PgError) { p.markRefused(tok, pgErr) }}
	}
}

// loginWatcher parses backend message frames from the bytes read until the
// login is over. It never alters the stream.
type loginWatcher struct {
	net.Conn
	onRefused func(*pgconn.PgError)

	done   bool
	header [5]byte
	hn     int    // bytes of header read
	body   []byte // body of an ErrorResponse being collected
	remain int    // body bytes still to read (or skip)
	keep   bool   // collect the body (an ErrorResponse)
}

const maxErrorBody = 16 << 10

func (w *loginWatcher) Read(b []byte) (int, error) {
	n, err := w.Conn.Read(b)
	if !w.done && n > 0 {
		w.feed(b[:n])
	}
	return n, err
}

func (w *loginWatcher) feed(p []byte) {
	for len(p) > 0 && !w.done {
		if w.remain == 0 && w.hn < 5 {
			k := copy(w.header[w.hn:], p)
			w.hn += k
			p = p[k:]
			if w.hn < 5 {
				return
			}
			size := int(binary.BigEndian.Uint32(w.header[1:])) - 4
			if size < 0 || size > 1<<24 {
				w.done = true // not a protocol stream we understand
				return
			}
			switch w.header[0] {
			case 'Z': // ReadyForQuery: the login succeeded
				w.done = true
				return
			case 'E':
				w.keep = size <= maxErrorBody
				w.body = w.body[:0]
			default:
				w.keep = false
			}
			w.remain = size
			if size == 0 {
				w.endMessage()
			}
			continue
		}
		k := min(w.remain, len(p))
		if w.keep {
			w.body = append(w.body, p[:k]...)
		}
		w.remain -= k
		p = p[k:]
		if w.remain == 0 {
			w.endMessage()
		}
	}
}

func (w *loginWatcher) endMessage() {
	w.hn = 0
	if w.header[0] != 'E' {
		return
	}
	w.done = true
	if !w.keep {
		return
	}
	pgErr := parseErrorResponse(w.body)
	if credentialRefused(pgErr) {
		w.onRefused(pgErr)
	}
}
