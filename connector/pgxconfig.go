package connector

import (
	"errors"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// pgxConfig builds the base pgx configuration without a password. Every
// setting pgx would otherwise take from the process environment (PGOPTIONS,
// PGTZ, PGSSLCERT, PGPASSFILE, PGTARGETSESSIONATTRS, PGSERVICE, ...) is
// given explicitly, so the result depends on Config (and LookupEnv) alone;
// a placeholder password keeps pgx from reading a password file.
func pgxConfig(r *resolved) (*pgx.ConnConfig, string, error) {
	c := &r.Config
	host := c.Host
	if host == "" {
		host = "localhost" // validation before the host is looked up
	}
	timeout := int((c.ConnectTimeout + time.Second - 1) / time.Second)
	kv := []string{
		"host=" + quoteDSN(host),
		"port=" + strconv.Itoa(c.Port),
		"dbname=" + quoteDSN(c.Database),
		"user=" + quoteDSN(nonEmpty(c.User, "placeholder")),
		"password=placeholder",
		"passfile=''",
		"sslmode=disable",
		"sslcert=''",
		"sslkey=''",
		"sslrootcert=''",
		"sslpassword=''",
		"sslcertmode=allow",
		"sslnegotiation=postgres",
		"target_session_attrs=any",
		"min_protocol_version=3.0",
		"max_protocol_version=3.0",
		"channel_binding=prefer",
		"require_auth=''",
		"connect_timeout=" + strconv.Itoa(timeout),
		"application_name=" + quoteDSN(c.AppName),
	}
	if svc := serviceOverride(); svc != "" {
		kv = append(kv, svc)
	}
	dsn := strings.Join(kv, " ")
	pc, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, "", &ConfigError{Setting: "Host/Port/Database/User", Problem: "pgx cannot use these settings", Fix: "check the values", Err: errors.New(redactParseError(err))}
	}
	pc.Password = ""
	pc.ConnectTimeout = c.ConnectTimeout
	if c.QueryExecMode != 0 {
		pc.DefaultQueryExecMode = c.QueryExecMode
	}
	// Run-time parameters come from Config only (pgx adds PGOPTIONS, PGTZ,
	// ... from the process environment).
	pc.RuntimeParams = map[string]string{"application_name": c.AppName}
	for k, v := range c.RuntimeParams {
		pc.RuntimeParams[k] = v
	}
	return pc, dsn, nil
}

func nonEmpty(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

var (
	serviceOnce sync.Once
	serviceKV   string
)

// serviceOverride returns the settings that neutralise PGSERVICE and
// PGSERVICEFILE of the process environment, which pgx would read and fail
// on if the service does not exist: an explicit, empty service of our own.
func serviceOverride() string {
	if os.Getenv("PGSERVICE") == "" {
		return ""
	}
	serviceOnce.Do(func() {
		f, err := os.CreateTemp("", "lakebase-go-pgservice-*.conf")
		if err != nil {
			return
		}
		defer f.Close()
		if _, err := f.WriteString("[lakebase-go-none]\n"); err != nil {
			return
		}
		serviceKV = "service=lakebase-go-none servicefile=" + quoteDSN(f.Name())
	})
	return serviceKV
}

// redactParseError keeps a pgx parse error message but never the connection
// string it may quote (which holds only a placeholder password, but callers
// should not have to know that).
func redactParseError(err error) string {
	msg := err.Error()
	if i := strings.Index(msg, "cannot parse `"); i >= 0 {
		if j := strings.Index(msg[i+14:], "`"); j >= 0 {
			msg = msg[:i] + "cannot parse connection settings" + msg[i+14+j+1:]
		}
	}
	return msg
}

func quoteDSN(s string) string {
	if s != "" && !strings.ContainsAny(s, " '\\\t\n\r") {
		return s
	}
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}
