package peruser

import (
	"context"
	"database/sql"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"

	"github.com/lakebase-go/lakebase/connector"
	"github.com/lakebase-go/lakebase/tokensource"
)

type ctxKey struct{}

type ctxValue struct {
	db   *sql.DB
	mode AuthMode
}

func authModeAttr(m AuthMode) attribute.KeyValue {
	return attribute.String("lakebase.auth_mode", string(m))
}

// Middleware resolves the request's user pool (see ForRequest), holds it
// for the length of the request and puts it in the request context
// (DBFromContext). A request that gets no pool is answered with
// StatusCode(err) — 401 without a valid identity, 403 for an access token
// that does not prove its email (unless the development fallback applies),
// 503 for a transient failure, 500 otherwise — and the handler is not
// called. The cause of every 5xx is logged (with the user's email, never a
// token; requests refused by MaxVerifications in one line a second with
// their count); Config.ErrorHandler, when set, writes the response.
func (m *Manager) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		db, mode, release, err := m.forRequest(r)
		if err != nil {
			m.fail(w, r, err)
			return
		}
		defer release()
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), ctxKey{}, ctxValue{db: db, mode: mode})))
	})
}

// busyLogEvery is the least time between two log lines about requests
// refused by MaxVerifications: a flood of junk tokens is one line a second.
const busyLogEvery = time.Second

// fail logs the cause of a 5xx and writes the error response.
func (m *Manager) fail(w http.ResponseWriter, r *http.Request, err error) {
	code := StatusCode(err)
	switch {
	case errors.Is(err, ErrBusy):
		now := time.Now().UnixNano()
		if last := m.busyLogged.Load(); now-last >= int64(busyLogEvery) && m.busyLogged.CompareAndSwap(last, now) {
			m.logger.Warn("peruser: requests refused with 503: MaxVerifications verifications in flight (logged at most once a second)",
				slog.Int("max_verifications", m.cfg.MaxVerifications), slog.Int64("refused_total", m.busy.Load()))
		}
	case code >= 500:
		lvl := slog.LevelError
		switch {
		case r.Context().Err() != nil:
			lvl = slog.LevelInfo // the client went away
		case code == http.StatusServiceUnavailable:
			lvl = slog.LevelWarn
		}
		id := identityOf(r)
		email := ""
		var ie *identified
		switch {
		case errors.As(err, &ie):
			email = ie.role
		case id.validateShape() == nil:
			email, _ = m.canonical(id.Email)
		}
		attrs := []slog.Attr{slog.String("email", email), slog.Int("status", code),
			slog.String("error", scrubMessage(err.Error(), id.AccessToken))}
		var le *connector.LoginError
		if errors.As(err, &le) {
			// The message may be cut (scrubbed messages are bounded): say why.
			attrs = append(attrs, slog.String("reason", le.Reason.String()), slog.String("sqlstate", le.Code))
		}
		m.logger.LogAttrs(r.Context(), lvl, "peruser: request failed", attrs...)
	}
	if m.cfg.ErrorHandler != nil {
		m.cfg.ErrorHandler(w, r, err)
		return
	}
	http.Error(w, http.StatusText(code), code)
}

// scrubMessage removes the access token and anything credential-shaped
// from an error message before it is logged.
func scrubMessage(msg, token string) string {
	if token != "" {
		msg = strings.ReplaceAll(msg, token, "[REDACTED]")
	}
	return tokensource.Scrub(msg)
}

// DBFromContext returns the pool Middleware chose and whose credentials it
// uses.
func DBFromContext(ctx context.Context) (*sql.DB, AuthMode, bool) {
	v, ok := ctx.Value(ctxKey{}).(ctxValue)
	return v.db, v.mode, ok
}
