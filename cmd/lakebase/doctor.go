package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/lakebase-go/lakebase/internal/doctor"
)

func doctorCommand() command {
	return command{
		name:    "doctor",
		summary: "check every stage from settings to a query, with the fix for the first failure",
		usage:   "[settings flags]",
		help: `Walks every stage of a connection and prints each with its time:

    settings              resolved as connector.New does, and where each came from
    workspace             DATABRICKS_HOST (or the profile) answers
    workspace credentials the workspace accepts the credentials (SCIM Me)
    identity              the role to log in as is the identity that mints tokens
    host                  the endpoint's or instance's host (or PGHOST)
    database credential   a token is minted for the role
    dns                   the host resolves
    tcp (with wake-up)    the server accepts a connection (a suspended endpoint
                          is given PGCONNECT_TIMEOUT, 60s by default, to wake)
    tls                   verify-full: the certificate chain and the host name
    login                 the role logs in (role exists, access rules, TLS)
    query                 SELECT current_user, current_database(), version()

It stops at the first failure and prints the error and its fix. Exit status
0 when every stage passed, 1 at a failure. No secret is printed.`,
		run: runDoctor,
	}
}

func runDoctor(ctx context.Context, fs *flag.FlagSet, args []string, out, errOut io.Writer) int {
	var s settings
	s.register(fs)
	timeout := fs.Duration("stage-timeout", 30*time.Second, "bound of each network stage (tcp and login are bounded by PGCONNECT_TIMEOUT)")
	if st, ok := parse(fs, args, out); !ok {
		return st
	}
	if err := s.validate(); err != nil {
		fmt.Fprintln(errOut, err)
		return exitUsage
	}
	fmt.Fprintln(out, "lakebase doctor")
	ok := doctor.Run(ctx, doctor.Options{Config: s.lazy(cliLogger(errOut)), StageTimeout: *timeout}, func(st doctor.Stage) {
		fmt.Fprintf(out, "  %-4s %-22s %9s  %s\n", st.Status, st.Name, st.Duration.Round(100*time.Microsecond), st.Detail)
		if st.Status == doctor.Failed {
			msg := st.Err.Error()
			if st.Fix != "" {
				msg = strings.TrimSuffix(msg, " (fix: "+st.Fix+")")
			}
			fmt.Fprintf(out, "\n  error: %s\n", msg)
			if st.Fix != "" {
				fmt.Fprintf(out, "  fix:   %s\n", st.Fix)
			}
		}
	})
	if !ok {
		return exitFail
	}
	fmt.Fprintln(out, "\nall stages passed")
	return exitOK
}
