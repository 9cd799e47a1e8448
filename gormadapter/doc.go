// Package gormadapter opens a *gorm.DB on a Lakebase connector, so GORM gets
// a current token on every new connection.
//
//	gdb, err := gormadapter.Open(c) // c from connector.New
//	sqlDB, _ := gdb.DB()
//	defer sqlDB.Close() // closes the connector: its token refresh stops
//
// GORM is given a *sql.DB built by connector.OpenDB (through the postgres
// dialector's Conn field), so closing GORM's handle closes the connector;
// an Open that fails closes it too. Nothing keeps refreshing after the
// handle is gone.
//
// With Conn, the postgres dialector never sees a DSN, so settings it would
// read from one are options here: WithGormConfig, WithoutReturning,
// WithoutQuotingCheck, WithPoolOptions and WithPreferSimpleProtocol (pgx's
// simple protocol for this DB's connections, with Open and OpenConfig).
// Every option given is applied; none is ignored.
package gormadapter
