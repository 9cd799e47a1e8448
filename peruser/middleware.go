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

// Middleware resolves the request's user pool, holds it for the length of
// the request and puts it in the request context (DBFromContext). A request
// without a valid identity gets 401 (unless the development fallback is
// on); the handler is not called.
func (m *Manager) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, err := IdentityFromRequest(r)
		var v ctxValue
		if err != nil {
			db, ferr := m.fallback(err)
			if ferr != nil {
				http.Error(w, http.StatusText(StatusCode(ferr)), StatusCode(ferr))
				return
			}
			v = ctxValue{db: db, mode: ServicePrincipal}
		} else {
			db, release, err := m.Acquire(r.Context(), id)
			if err != nil {
				http.Error(w, http.StatusText(StatusCode(err)), StatusCode(err))
				return
			}
			defer release()
			v = ctxValue{db: db, mode: OnBehalfOfUser}
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), ctxKey{}, v)))
	})
}

// DBFromContext returns the pool Middleware chose and whose credentials it
// uses.
func DBFromContext(ctx context.Context) (*sql.DB, AuthMode, bool) {
	v, ok := ctx.Value(ctxKey{}).(ctxValue)
	return v.db, v.mode, ok
}
