package bench

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"
	"log/slog"
	"time"

	"github.com/XSAM/otelsql"
	"github.com/exaring/otelpgx"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/trace"

	"github.com/lakebase-go/lakebase/connector"
)

// TelemetryCase is the name of case 4c in the table.
const TelemetryCase = "4c. tracing cost, SELECT 1 on an open connection, each against its own untraced baseline"

// leanSpans are the span options Config.Telemetry uses (connector's
// otelOptions; with its span attributes below), so that "otelsql on pgx,
// the connector's options" isolates the cost of the connector's wiring
// from otelsql's own.
var leanSpans = otelsql.WithSpanOptions(otelsql.SpanOptions{OmitConnResetSession: true, OmitRows: true, OmitConnPrepare: true, DisableErrSkip: true})

// telemetryCase is case 4c: what tracing costs on each path a user can
// take, paired: otelsql on plain pgx stdlib (otelsql's defaults, and the
// connector's lean span options), the connector with Config.Telemetry, and
// otelpgx on pgxpool through Config.BeforeConnect. Every traced contender
// uses one SDK tracer provider that samples every span and exports none.
// The last row divides the connector's ratio by otelsql-on-pgx's (same
// options) per cycle: 1 means the connector adds nothing to otelsql's price.
func (env *Env) telemetryCase(ctx context.Context, o Options) ([]Row, error) {
	tp := trace.NewTracerProvider()
	defer func() { _ = tp.Shutdown(context.Background()) }()
	var closers []func()
	defer func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
	}()
	single := func(db *sql.DB) (*sql.DB, error) {
		db.SetMaxOpenConns(1)
		closers = append(closers, func() { _ = db.Close() })
		return db, db.PingContext(ctx)
	}

	// Plain pgx stdlib with a token in hand (no connector).
	fetch, err := env.fetcher()
	if err != nil {
		return nil, err
	}
	tok, err := fetch(ctx)
	if err != nil {
		return nil, err
	}
	base, err := env.baseConn()
	if err != nil {
		return nil, err
	}
	base.Password = tok.Value
	plain := func() driver.Connector { return stdlib.GetConnector(*base) }
	pgxDB, err := single(sql.OpenDB(plain()))
	if err != nil {
		return nil, err
	}
	otelDefaultDB, err := single(otelsql.OpenDB(plain(), otelsql.WithTracerProvider(tp)))
	if err != nil {
		return nil, err
	}
	// The connector's options: its span options and its span attributes.
	sameAttrs := otelsql.WithAttributes(
		attribute.String("db.system.name", "postgresql"),
		attribute.String("db.namespace", env.E.Database()),
		attribute.String("server.address", env.E.Host()),
		attribute.Int("server.port", env.E.Port()),
	)
	otelLeanDB, err := single(otelsql.OpenDB(plain(), otelsql.WithTracerProvider(tp), leanSpans, sameAttrs))
	if err != nil {
		return nil, err
	}

	// The connector without and with Config.Telemetry.
	cfg, err := env.connectorConfig()
	if err != nil {
		return nil, err
	}
	ours := func(traced bool) (*sql.DB, error) {
		c := cfg
		c.Telemetry = traced
		if traced {
			c.TracerProvider = tp
		}
		conn, err := connector.New(ctx, c)
		if err != nil {
			return nil, err
		}
		return single(connector.OpenDB(conn))
	}
	connDB, err := ours(false)
	if err != nil {
		return nil, err
	}
	connOTelDB, err := ours(true)
	if err != nil {
		return nil, err
	}

	// pgxpool from the connector, without and with otelpgx.
	pool := func(traced bool) (*pgxpool.Pool, error) {
		c := cfg
		c.Logger = slog.New(slog.DiscardHandler)
		if traced {
			tracer := otelpgx.NewTracer(otelpgx.WithTracerProvider(tp))
			c.BeforeConnect = func(_ context.Context, cc *pgx.ConnConfig) error { cc.Tracer = tracer; return nil }
		}
		conn, err := connector.New(ctx, c)
		if err != nil {
			return nil, err
		}
		pc, err := conn.PoolConfig()
		if err != nil {
			_ = conn.Close()
			return nil, err
		}
		pc.MaxConns = 1
		p, err := pgxpool.NewWithConfig(ctx, pc)
		if err != nil {
			_ = conn.Close()
			return nil, err
		}
		closers = append(closers, func() { p.Close(); _ = conn.Close() })
		return p, p.Ping(ctx)
	}
	poolPlain, err := pool(false)
	if err != nil {
		return nil, err
	}
	poolOTel, err := pool(true)
	if err != nil {
		return nil, err
	}

	selDB := func(db *sql.DB) op { return selectOneBatch(o.QueryBatch, dbSelectOne(db)) }
	selPool := func(p *pgxpool.Pool) op { return selectOneBatch(o.QueryBatch, poolSelectOne(p)) }
	cs := []contender{
		{"pgx stdlib (no connector), untraced", selDB(pgxDB)},
		{"otelsql on pgx stdlib, otelsql's defaults", selDB(otelDefaultDB)},
		{"otelsql on pgx stdlib, the connector's options", selDB(otelLeanDB)},
		{"lakebase connector, untraced", selDB(connDB)},
		{"lakebase connector + Config.Telemetry", selDB(connOTelDB)},
		{"pgxpool from PoolConfig, untraced", selPool(poolPlain)},
		{"pgxpool + otelpgx via Config.BeforeConnect", selPool(poolOTel)},
	}
	samples, err := paired(ctx, cs, o.QueryPairs, 10, 0, o.Seed)
	if err != nil {
		return nil, err
	}
	per := float64(max(o.QueryBatch, 1))
	row := func(name string, i, baseline int, note string) Row {
		r := Row{Case: "", Contender: name, Value: MedianCI(floats(samples[i], o.QueryBatch)).Durations(100 * time.Nanosecond), N: len(samples[i])}
		if baseline < 0 {
			r.Ratio = "1 (baseline)"
		} else {
			est := MedianCI(ratios(samples[i], samples[baseline]))
			r.Est, r.Ratio, r.Note = &est, est.Ratio(), est.Verdict()
		}
		if note != "" {
			if r.Note != "" {
				r.Note += "; "
			}
			r.Note += note
		}
		return r
	}
	rows := []Row{
		row(cs[0].name, 0, -1, ""),
		row(cs[1].name, 1, 0, "vs pgx stdlib"),
		row(cs[2].name, 2, 0, "vs pgx stdlib"),
		row(cs[3].name, 3, -1, ""),
		row(cs[4].name, 4, 3, "vs the untraced connector"),
		row(cs[5].name, 5, -1, ""),
		row(cs[6].name, 6, 5, "vs the untraced pool"),
	}
	rows[0].Case = TelemetryCase
	// The connector's tracing price over otelsql's own (same options), per
	// cycle.
	rr := make([]float64, len(samples[0]))
	for c := range rr {
		rr[c] = (float64(samples[4][c]) / float64(samples[3][c])) / (float64(samples[2][c]) / float64(samples[0][c]))
	}
	est := MedianCI(rr)
	rows = append(rows, Row{Contender: "connector's tracing ratio ÷ otelsql-on-pgx's (same options)", Ratio: est.Ratio(), Est: &est, N: len(rr),
		Note: fmt.Sprintf("%s; 1 = the connector adds nothing to otelsql's price (per query: %.0f queries a sample)", est.Verdict(), per)})
	return rows, nil
}
