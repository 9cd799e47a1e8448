package gormadapter

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/jackc/pgx/v5"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"

	"github.com/lakebase-go/lakebase/connector"
)

type options struct {
	gorm                *gorm.Config
	pool                []connector.PoolOption
	withoutReturning    bool
	withoutQuotingCheck bool
}

// Option configures Open and OpenConfig.
type Option func(*options)

// WithGormConfig passes GORM's own configuration (nil: &gorm.Config{}).
func WithGormConfig(c *gorm.Config) Option { return func(o *options) { o.gorm = c } }

// WithPoolOptions passes pool options (connector.With*) to
// connector.OpenDB; every option of every call is applied, in order.
func WithPoolOptions(p ...connector.PoolOption) Option {
	return func(o *options) { o.pool = append(o.pool, p...) }
}

// WithoutReturning makes GORM not use RETURNING (the dialector's setting).
func WithoutReturning() Option { return func(o *options) { o.withoutReturning = true } }

// WithoutQuotingCheck disables the dialector's identifier quoting check.
func WithoutQuotingCheck() Option { return func(o *options) { o.withoutQuotingCheck = true } }

// WithPreferSimpleProtocol uses pgx's simple protocol (no prepared
// statements; what GORM calls PreferSimpleProtocol) for this DB's
// connections, with Open and OpenConfig alike.
func WithPreferSimpleProtocol() Option {
	return func(o *options) {
		o.pool = append(o.pool, connector.WithQueryExecMode(pgx.QueryExecModeSimpleProtocol))
	}
}

func collect(opts []Option) options {
	var o options
	for _, f := range opts {
		f(&o)
	}
	if o.gorm == nil {
		o.gorm = &gorm.Config{}
	}
	return o
}

// Open returns a *gorm.DB on c. Closing the *sql.DB behind it
// (gdb.DB()) closes c. If Open fails, c is closed.
func Open(c *connector.Connector, opts ...Option) (*gorm.DB, error) {
	o := collect(opts)
	return open(connector.OpenDB(c, o.pool...), o)
}

// OpenConfig builds the connector from cfg and opens GORM on it.
func OpenConfig(ctx context.Context, cfg connector.Config, opts ...Option) (*gorm.DB, error) {
	o := collect(opts)
	c, err := connector.New(ctx, cfg)
	if err != nil {
		return nil, err
	}
	return open(connector.OpenDB(c, o.pool...), o)
}

// open hands db to GORM; on failure it closes db (and so the connector).
func open(db *sql.DB, o options) (*gorm.DB, error) {
	gdb, err := gorm.Open(postgres.New(postgres.Config{
		Conn:                db,
		WithoutReturning:    o.withoutReturning,
		WithoutQuotingCheck: o.withoutQuotingCheck,
	}), o.gorm)
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("gormadapter: %w", err)
	}
	return gdb, nil
}
