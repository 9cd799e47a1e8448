package connector

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Pool defaults applied by OpenDB. Lakebase checks the token only at login,
// so connection lifetime is not tied to token lifetime; it is bounded so that
// connections move to new compute after scaling or a restart and never meet
// the service's 24 h idle limit.
const (
	// DefaultMaxConnLifetime is the longest a connection is reused.
	DefaultMaxConnLifetime = 30 * time.Minute
	// DefaultLifetimeJitter is the fraction of the lifetime by which each
	// connection's lifetime is shortened at random, so a fleet does not
	// reconnect in waves.
	DefaultLifetimeJitter = 0.2
	// DefaultMaxIdleTime closes connections unused for this long.
	DefaultMaxIdleTime = 5 * time.Minute
	// DefaultMaxOpenConns caps open connections per pool.
	DefaultMaxOpenConns = 20
	// DefaultMaxIdleConns is the number of idle connections kept.
	DefaultMaxIdleConns = 5
)

// poolOptions are the database/sql pool settings OpenDB applies, set by
// the With* options. Zero fields take the defaults above; a negative
// duration or count means off ("no limit"; for MaxIdleConns: keep no idle
// connection; for the jitter: none).
type poolOptions struct {
	MaxConnLifetime time.Duration
	LifetimeJitter  float64
	MaxIdleTime     time.Duration
	MaxOpenConns    int
	MaxIdleConns    int
	QueryExecMode   pgx.QueryExecMode // zero: Config.QueryExecMode
}

// PoolOption tunes the pool OpenDB (and gormadapter.Open, sqlxadapter.Open)
// opens over a Connector: one of the With* functions. Options are applied
// in order, so a later one overrides an earlier one of the same setting.
type PoolOption interface {
	applyPool(*poolOptions)
}

// WithQueryExecMode sets pgx's query execution mode for the DB's
// connections (for example pgx.QueryExecModeSimpleProtocol).
func WithQueryExecMode(m pgx.QueryExecMode) PoolOption {
	return poolOptionFunc(func(p *poolOptions) { p.QueryExecMode = m })
}

type poolOptionFunc func(*poolOptions)

func (f poolOptionFunc) applyPool(p *poolOptions) { f(p) }

// WithMaxOpenConns caps the pool's open connections. Zero:
// DefaultMaxOpenConns (20); negative: no limit.
func WithMaxOpenConns(n int) PoolOption {
	return poolOptionFunc(func(p *poolOptions) { p.MaxOpenConns = n })
}

// WithMaxIdleConns sets how many idle connections are kept. Zero:
// DefaultMaxIdleConns (5); negative: none.
func WithMaxIdleConns(n int) PoolOption {
	return poolOptionFunc(func(p *poolOptions) { p.MaxIdleConns = n })
}

// WithConnMaxLifetime sets the longest a connection is reused and the
// random fraction (0..1) by which each connection's lifetime is shortened,
// so a fleet does not reconnect in waves. Zero d: DefaultMaxConnLifetime
// (30 min), negative: no limit; zero jitter: DefaultLifetimeJitter (0.2),
// negative: none.
func WithConnMaxLifetime(d time.Duration, jitter float64) PoolOption {
	return poolOptionFunc(func(p *poolOptions) { p.MaxConnLifetime, p.LifetimeJitter = d, jitter })
}

// WithConnMaxIdleTime closes connections unused for d. Zero:
// DefaultMaxIdleTime (5 min); negative: never.
func WithConnMaxIdleTime(d time.Duration) PoolOption {
	return poolOptionFunc(func(p *poolOptions) { p.MaxIdleTime = d })
}

// resolvePoolOptions applies opts in order to the zero poolOptions and fills
// the defaults.
func resolvePoolOptions(opts ...PoolOption) poolOptions {
	var o poolOptions
	for _, opt := range opts {
		if opt != nil {
			opt.applyPool(&o)
		}
	}
	return o.withDefaults()
}

func (o poolOptions) withDefaults() poolOptions {
	if o.MaxConnLifetime == 0 {
		o.MaxConnLifetime = DefaultMaxConnLifetime
	}
	if o.LifetimeJitter == 0 {
		o.LifetimeJitter = DefaultLifetimeJitter
	}
	if o.LifetimeJitter > 1 {
		o.LifetimeJitter = 1
	}
	if o.MaxIdleTime == 0 {
		o.MaxIdleTime = DefaultMaxIdleTime
	}
	if o.MaxOpenConns == 0 {
		o.MaxOpenConns = DefaultMaxOpenConns
	}
	if o.MaxIdleConns == 0 {
		o.MaxIdleConns = DefaultMaxIdleConns
	}
	return o
}

func orZero[T int | time.Duration](v T) T {
	if v < 0 {
		return 0
	}
	return v
}

// OpenDB returns a *sql.DB on c with Lakebase pool defaults (the Default*
// constants, changed by the With* options, applied in order). Each
// connection gets its own lifetime, drawn from
// [MaxConnLifetime·(1−LifetimeJitter), MaxConnLifetime] (WithConnMaxLifetime); a
// connection past it is discarded the next time database/sql would reuse it.
// With Config.Telemetry the pool's sql.DBStats metrics are registered and
// unregistered when the returned DB is closed. Closing the DB closes c.
func OpenDB(c *Connector, opts ...PoolOption) *sql.DB {
	o := resolvePoolOptions(opts...)
	var dc driver.Connector = c
	if (o.MaxConnLifetime > 0 && o.LifetimeJitter > 0) || o.QueryExecMode != 0 {
		d := &dbConnector{Connector: c, mode: o.QueryExecMode}
		if o.MaxConnLifetime > 0 && o.LifetimeJitter > 0 {
			d.life = lifetime{o.MaxConnLifetime, o.LifetimeJitter}
		}
		dc = d
	}
	db := sql.OpenDB(dc)
	db.SetConnMaxLifetime(orZero(o.MaxConnLifetime))
	db.SetConnMaxIdleTime(orZero(o.MaxIdleTime))
	db.SetMaxOpenConns(orZero(o.MaxOpenConns))
	if o.MaxIdleConns < 0 {
		db.SetMaxIdleConns(0)
	} else {
		db.SetMaxIdleConns(o.MaxIdleConns)
	}
	if err := c.registerStats(db); err != nil {
		c.logger.Warn(err.Error())
	}
	return db
}

// deadlineKey is the pgconn CustomData key holding a connection's jittered
// end of life.
const deadlineKey = "lakebase.deadline"

// lifetime is the jittered connection lifetime of one DB opened by OpenDB.
type lifetime struct {
	max    time.Duration
	jitter float64
}

// lifetimeKey carries a DB's lifetime into afterConnect.
type lifetimeKey struct{}

// dbConnector is the connector of one DB from OpenDB: it stamps that DB's
// lifetime on its new connections without changing the shared Connector, so
// several DBs on one Connector keep their own settings.
type dbConnector struct {
	*Connector
	life lifetime
	mode pgx.QueryExecMode
}

// execModeKey carries a DB's query execution mode into beforeConnect.
type execModeKey struct{}

func (d *dbConnector) Connect(ctx context.Context) (driver.Conn, error) {
	ctx = context.WithValue(ctx, lifetimeKey{}, d.life)
	if d.mode != 0 {
		ctx = context.WithValue(ctx, execModeKey{}, d.mode)
	}
	return d.Connector.Connect(ctx)
}

// afterConnect stamps a new connection with its jittered deadline, then
// runs Config.AfterConnect.
func (c *Connector) afterConnect(ctx context.Context, conn *pgx.Conn) error {
	if l, ok := ctx.Value(lifetimeKey{}).(lifetime); ok && l.max > 0 {
		life := l.max - time.Duration(rand.Float64()*l.jitter*float64(l.max))
		conn.PgConn().CustomData()[deadlineKey] = time.Now().Add(life)
	}
	if err := c.checkReadOnly(ctx, conn); err != nil {
		return err
	}
	return c.userAfterConnect(ctx, conn)
}

func (c *Connector) userAfterConnect(ctx context.Context, conn *pgx.Conn) error {
	if c.cfg.AfterConnect == nil {
		return nil
	}
	if err := c.cfg.AfterConnect(ctx, conn); err != nil {
		return fmt.Errorf("connector: Config.AfterConnect: %w", err)
	}
	return nil
}

// resetSession discards a connection past its deadline before reuse.
func (c *Connector) resetSession(_ context.Context, conn *pgx.Conn) error {
	if d, ok := conn.PgConn().CustomData()[deadlineKey].(time.Time); ok && time.Now().After(d) {
		return driver.ErrBadConn
	}
	return nil
}

// PoolConfig returns a pgxpool configuration for the same database whose
// BeforeConnect sets the current token, for programs that use pgxpool
// directly. The pool does not own the connector: close the pool, then the
// connector.
func (c *Connector) PoolConfig() (*pgxpool.Config, error) {
	pc, err := pgxpool.ParseConfig(c.dsn)
	if err != nil {
		return nil, fmt.Errorf("connector: pgxpool config: %s", redactParseError(err))
	}
	pc.ConnConfig = c.base.Copy()
	pc.BeforeConnect = c.PoolBeforeConnect
	if c.cfg.AfterConnect != nil || c.cfg.ReadOnly {
		pc.AfterConnect = c.poolAfterConnect
	}
	pc.MaxConnLifetime = DefaultMaxConnLifetime
	pc.MaxConnLifetimeJitter = time.Duration(DefaultLifetimeJitter * float64(DefaultMaxConnLifetime))
	pc.MaxConnIdleTime = DefaultMaxIdleTime
	pc.MaxConns = DefaultMaxOpenConns
	return pc, nil
}
