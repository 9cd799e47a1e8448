// Package sqlxadapter opens a *sqlx.DB on a Lakebase connector.
//
//	xdb := sqlxadapter.Open(c) // c from connector.New
//	defer xdb.Close()          // closes the connector: its token refresh stops
//
// sqlx picks the placeholder style from the driver name and does not know
// "lakebase"; the handle is created under the name "pgx", so Rebind and the
// Named* methods use $1, $2, ... as Postgres expects.
package sqlxadapter
