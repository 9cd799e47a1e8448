// Package driver registers the "lakebase" database/sql driver.
//
//	import _ "github.com/lakebase-go/lakebase/driver"
//
//	db, err := sql.Open("lakebase", "lakebase_endpoint=projects/p/branches/b/endpoints/e dbname=databricks_postgres")
//
// The data source name is a libpq keyword/value string or a postgres:// URL.
// Besides the usual keys (host, port, dbname, user, password, sslmode,
// sslrootcert, application_name, connect_timeout, search_path, options) it
// accepts lakebase_endpoint, lakebase_instance, databricks_profile,
// refresh=eager|lazy, token_ttl (a Go duration) and target_session_attrs
// (read-only or standby: connector.Config.ReadOnly). Keys that are absent
// fall back to the environment exactly like connector.Config does. An
// unknown key is an error that lists the accepted keys (and a close one, if
// any), so a typo is caught rather than ignored.
//
// The driver implements driver.DriverContext, so database/sql parses the DSN
// once per sql.Open and keeps one connector (and one token cache) per
// *sql.DB; db.Close stops its refresh. The connector is built on the first
// connection, with that connection's context, so sql.Open does no network
// calls, and that first connection returns within its context whatever the
// workspace does. sql.Open itself reports a malformed DSN and every value that
// can be checked without the network (port, sslmode, the root certificate
// file, the endpoint form: connector.Config.Validate) as a *DSNError or a
// *connector.ConfigError; a *DSNError also matches errors.As with a
// *connector.ConfigError. No error of this package contains the password or
// any part of a value.
package driver
