package peruser

import (
	"context"
	"database/sql"
	"net/http"

	"go.opentelemetry.io/otel/attribute"
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
// (DBFromContext). A request without a valid identity gets 401, one whose
// access token does not prove its email 403 (unless the development
// fallback applies); the handler is not called.
func (m *Manager) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		db, mode, release, err := m.forRequest(r)
		if err != nil {
			http.Error(w, http.StatusText(StatusCode(err)), StatusCode(err))
			return
		}
		defer release()
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), ctxKey{}, ctxValue{db: db, mode: mode})))
	})
}

// DBFromContext returns the pool Middleware chose and whose credentials it
// uses.
func DBFromContext(ctx context.Context) (*sql.DB, AuthMode, bool) {
	v, ok := ctx.Value(ctxKey{}).(ctxValue)
	return v.db, v.mode, ok
}
