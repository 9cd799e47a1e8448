package connector

import (
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"

	"github.com/XSAM/otelsql"
	"go.opentelemetry.io/otel/attribute"
)

// wrapTelemetry instruments conn with otelsql. otelsql only exposes its
// connector wrapper through driver.DriverContext, so a tiny driver hands
// conn to it.
func wrapTelemetry(conn driver.Connector, r *resolved) driver.Connector {
	wrapped, err := otelsql.WrapDriver(connectorDriver{conn}, otelOptions(r)...).(driver.DriverContext).OpenConnector("")
	if err != nil { // connectorDriver.OpenConnector cannot fail
		return conn
	}
	return wrapped
}

func otelOptions(r *resolved) []otelsql.Option {
	c := &r.Config
	opts := []otelsql.Option{
		otelsql.WithAttributes(
			attribute.String("db.system.name", "postgresql"),
			attribute.String("db.namespace", c.Database),
			attribute.String("server.address", c.Host),
			attribute.Int("server.port", c.Port),
		),
		otelsql.WithSpanOptions(otelsql.SpanOptions{OmitConnResetSession: true, OmitRows: true, OmitConnPrepare: true, DisableErrSkip: true}),
	}
	if c.TracerProvider != nil {
		opts = append(opts, otelsql.WithTracerProvider(c.TracerProvider))
	}
	if c.MeterProvider != nil {
		opts = append(opts, otelsql.WithMeterProvider(c.MeterProvider))
	}
	return append(opts, c.TelemetryOptions...)
}

// connectorDriver adapts a driver.Connector to driver.DriverContext so that
// otelsql.WrapDriver can wrap it.
type connectorDriver struct{ c driver.Connector }

func (d connectorDriver) Open(string) (driver.Conn, error) {
	return nil, errors.New("connector: Open by name is not supported; use the Connector")
}

func (d connectorDriver) OpenConnector(string) (driver.Connector, error) { return d.c, nil }

// registerStats registers otelsql's sql.DBStats metrics for db and arranges
// for the registration to be removed when the connector closes.
func (c *Connector) registerStats(db *sql.DB) error {
	if !c.cfg.Telemetry {
		return nil
	}
	opts := otelOptions(c.cfg)
	reg, err := otelsql.RegisterDBStatsMetrics(db, opts...)
	if err != nil {
		return fmt.Errorf("connector: register pool metrics: %w", err)
	}
	c.onClose(func() error { return reg.Unregister() })
	return nil
}
