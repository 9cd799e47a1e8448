// Package store is the query layer of the sqlc example, in the shape that
// sqlc generates from ../schema.sql and ../query.sql with sql_package
// pgx/v5 (see ../sqlc.yaml). It is written by hand so that the example
// needs no sqlc binary; regenerating it with sqlc yields the same API.
package store

import (
	"context"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// DBTX is what the queries run on: a *pgxpool.Pool, a *pgx.Conn or a
// pgx.Tx.
type DBTX interface {
	Exec(context.Context, string, ...interface{}) (pgconn.CommandTag, error)
	Query(context.Context, string, ...interface{}) (pgx.Rows, error)
	QueryRow(context.Context, string, ...interface{}) pgx.Row
}

// New returns the queries bound to db.
func New(db DBTX) *Queries {
	return &Queries{db: db}
}

// Queries holds the typed query methods.
type Queries struct {
	db DBTX
}

// WithTx returns the queries bound to tx.
func (q *Queries) WithTx(tx pgx.Tx) *Queries {
	return &Queries{
		db: tx,
	}
}
