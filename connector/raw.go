package connector

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
)

// WithPgxConn runs f with the *pgx.Conn under one connection of db, for
// what database/sql cannot express: CopyFrom, LISTEN/NOTIFY, pgx batches.
// It works with and without Config.Telemetry (otelsql wraps the driver
// connection; WithPgxConn unwraps it). The connection is held for the
// length of f and returned to the pool afterwards; f must not keep conn or
// close it.
func WithPgxConn(ctx context.Context, db *sql.DB, f func(conn *pgx.Conn) error) error {
	c, err := db.Conn(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	return RawPgxConn(c, f)
}

// RawPgxConn is WithPgxConn for a connection already taken from the pool
// with sql.DB.Conn.
func RawPgxConn(c *sql.Conn, f func(conn *pgx.Conn) error) error {
	return c.Raw(func(dc any) error {
		for range 8 { // unwrap at most a few layers of instrumentation
			switch v := dc.(type) {
			case *stdlib.Conn:
				return f(v.Conn())
			case interface{ Raw() driver.Conn }:
				dc = v.Raw()
			default:
				return fmt.Errorf("connector: the driver connection is a %T, not a pgx connection", dc)
			}
		}
		return errors.New("connector: too many layers around the pgx connection")
	})
}
