// Command quickstart shows token rotation end to end:
//
//	go -C examples run ./quickstart   # from the repository root
//
// (The examples are a module of their own, github.com/lakebase-go/lakebase/examples,
// so that their dependencies stay out of the library's go.mod.)
//
// Without a workspace configured it starts the local Lakebase emulator with
// tokens that live a few seconds, puts what a Databricks App is given into
// the environment (DATABRICKS_HOST, DATABRICKS_CLIENT_ID/SECRET — OAuth M2M,
// no PAT — and PG*), builds the connector from the environment alone with
// connector.New(ctx, connector.Config{...token timing only...}), then runs
// queries on new connections (and on one long-lived connection) across
// several rotations. With
// DATABRICKS_HOST and LAKEBASE_ENDPOINT set it connects to the real
// workspace and prints who it is connected as.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/lakebase-go/lakebase/connector"
	"github.com/lakebase-go/lakebase/examples/internal/demo"
	"github.com/lakebase-go/lakebase/lakebasetest"
	"github.com/lakebase-go/lakebase/tokensource"
)

func main() {
	duration := flag.Duration("duration", 12*time.Second, "how long to run the rotation demo")
	ttl := flag.Duration("ttl", 4*time.Second, "token lifetime the emulator hands out")
	flag.Parse()
	demo.Main(func(ctx context.Context, out io.Writer) error { return run(ctx, out, *duration, *ttl) })
}

func run(ctx context.Context, out io.Writer, duration, ttl time.Duration) error {
	env, release, err := demo.Setup(ctx, out, lakebasetest.WithMinTTL(time.Second), lakebasetest.WithTTL(ttl))
	if err != nil {
		return err
	}
	defer release()
	if env.Emulator == nil {
		return real(ctx, out)
	}
	e := env.Emulator
	restore := setEnv(e.AppEnv())
	defer restore()
	fmt.Fprintln(out, "Logging in the Databricks Apps way: OAuth M2M with DATABRICKS_CLIENT_ID/SECRET (no PAT), PG* from the environment.")
	// Everything but the token timing comes from the environment, as in an App.
	cfg := connector.Config{Token: tokensource.Options{EarlyRefresh: ttl / 4, SafetyMargin: ttl / 8, BackgroundRetryMin: 200 * time.Millisecond}}
	fmt.Fprintf(out, "PostgreSQL is on %s:%d (TLS, verify-full); tokens expire after %v.\n\n", e.Host(), e.FrontDoorPort(), ttl)

	c, err := connector.New(ctx, cfg)
	if err != nil {
		return err
	}
	db := connector.OpenDB(c)
	defer db.Close()

	long, err := db.Conn(ctx) // opened with the first token, kept for the whole run
	if err != nil {
		return err
	}
	defer long.Close()
	var longPID int
	if err := long.QueryRowContext(ctx, "SELECT pg_backend_pid()").Scan(&longPID); err != nil {
		return err
	}

	db.SetMaxIdleConns(0) // every other query logs in on a new connection
	var queries, failures int
	seen := e.Calls(lakebasetest.RouteCredentials)
	fmt.Fprintf(out, "token #%d minted; querying on new connections for %v...\n", seen, duration)
	start := time.Now()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for time.Since(start) < duration {
		var user string
		if err := db.QueryRowContext(ctx, "SELECT current_user").Scan(&user); err != nil {
			failures++
			fmt.Fprintf(out, "  query failed: %v\n", err)
		}
		queries++
		select {
		case <-tick.C:
			if n := e.Calls(lakebasetest.RouteCredentials); n != seen {
				seen = n
				tok, _ := c.TokenSource().Token(ctx)
				fmt.Fprintf(out, "  %5.1fs  token rotated: #%d, expires %s (%v left)\n",
					time.Since(start).Seconds(), n, tok.Expiry.Format("15:04:05.000"), time.Until(tok.Expiry).Round(100*time.Millisecond))
			}
			s := db.Stats()
			fmt.Fprintf(out, "  %5.1fs  %d queries ok, %d failed | pool: open=%d in-use=%d idle=%d\n",
				time.Since(start).Seconds(), queries-failures, failures, s.OpenConnections, s.InUse, s.Idle)
		default:
		}
	}
	var pid int
	longErr := long.QueryRowContext(ctx, "SELECT pg_backend_pid()").Scan(&pid)
	logins := e.Logins(e.ServicePrincipal())
	fmt.Fprintf(out, "\nSummary: %d queries on %d new connections across %d token rotations, %d failures.\n",
		queries, logins, seen-1, failures)
	if longErr == nil && pid == longPID {
		fmt.Fprintln(out, "The long-lived connection opened with the first token still works: tokens are checked only at login.")
	} else {
		fmt.Fprintf(out, "The long-lived connection failed: %v\n", longErr)
	}
	if failures > 0 || longErr != nil {
		return fmt.Errorf("quickstart: %d failed queries", failures)
	}
	return nil
}

// setEnv sets vars in the process environment and returns a function that
// puts the previous values back.
func setEnv(vars map[string]string) (restore func()) {
	type prev struct {
		v  string
		ok bool
	}
	saved := map[string]prev{}
	for k, v := range vars {
		old, ok := os.LookupEnv(k)
		saved[k] = prev{old, ok}
		_ = os.Setenv(k, v)
	}
	return func() {
		for k, p := range saved {
			if p.ok {
				_ = os.Setenv(k, p.v)
			} else {
				_ = os.Unsetenv(k)
			}
		}
	}
}

// real connects to the configured workspace and shows where it landed.
func real(ctx context.Context, out io.Writer) error {
	c, err := connector.New(ctx, connector.Config{})
	if err != nil {
		return err
	}
	db := connector.OpenDB(c)
	defer db.Close()
	var user, version string
	if err := db.QueryRowContext(ctx, "SELECT current_user, version()").Scan(&user, &version); err != nil {
		return err
	}
	fmt.Fprintf(out, "Connected to %s as %s\n%s\n", c.Host(), user, version)
	return nil
}
