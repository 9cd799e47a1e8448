package sqlxadapter

import (
	"context"
	"database/sql"

	"github.com/jmoiron/sqlx"

	"github.com/lakebase-go/lakebase/connector"
)

// DriverName is the name the handle is created under: one sqlx maps to
// $1-style placeholders.
const DriverName = "pgx"

// Open returns a *sqlx.DB on c with Lakebase pool defaults (or opts).
// Closing it closes c.
func Open(c *connector.Connector, opts ...connector.PoolOption) *sqlx.DB {
	return wrap(connector.OpenDB(c, opts...))
}

// OpenConfig builds the connector from cfg and opens sqlx on it.
func OpenConfig(ctx context.Context, cfg connector.Config, opts ...connector.PoolOption) (*sqlx.DB, error) {
	c, err := connector.New(ctx, cfg)
	if err != nil {
		return nil, err
	}
	return Open(c, opts...), nil
}

func wrap(db *sql.DB) *sqlx.DB { return sqlx.NewDb(db, DriverName) }
