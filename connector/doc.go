// Package connector provides a database/sql [driver.Connector] for Databricks
// Lakebase that injects a current OAuth token as the Postgres password on
// every new physical connection.
//
// Lakebase checks the password only when a connection logs in, and its OAuth
// tokens live for at most an hour. A plain pool that was given a token once
// breaks at the first new connection after that token expires. A [Connector]
// owns a cached, self-refreshing [tokensource.Cached] and copies the base pgx
// configuration for every new connection, setting only the password on the
// copy. Queries on open connections never touch the token path.
//
//	c, err := connector.New(ctx, connector.Config{Endpoint: "projects/p/branches/b/endpoints/e"})
//	if err != nil { ... }
//	db := connector.OpenDB(c) // or sql.OpenDB(c)
//	defer db.Close()          // also stops the token refresh
//
// Zero fields of [Config] fall back to the environment variables a Databricks
// App receives (LAKEBASE_ENDPOINT, PGHOST, PGUSER, PGSSLMODE, ...); see [Config].
//
// When a login fails with SQLSTATE 28P01 or 28000 while a cached token was
// used, the connector forces one token refresh and retries the login once.
// If that also fails, the error is a [*LoginError] naming the role and the
// likely fix. No error, log line or span produced by this package contains a
// token or password.
//
// pgx-native users get the same rotation through [Connector.BeforeConnect]
// or [Connector.PoolConfig].
package connector
