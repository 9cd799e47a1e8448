package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/lakebase-go/lakebase/sslmode"
)

// startupTimeout bounds what the short-lived commands do before their
// work: resolution, look-ups, the first token.
const startupTimeout = 2 * time.Minute

func tokenCommand() command {
	return command{
		name:    "token",
		summary: "print a current Lakebase credential (for PGPASSWORD)",
		usage:   "[--json] [settings flags]",
		help: `Prints a current database credential for the resolved role, minted through
the same path a Go program uses (package connector), followed by a newline:

    PGPASSWORD=$(lakebase token) psql "host=$PGHOST dbname=databricks_postgres sslmode=require"

With --json it prints one object: {"token": "...", "expiry": "RFC 3339", "role": "..."}.
The credential is a secret: it is printed on stdout only, never logged.
Exit status 1 when no credential can be minted (the error says why and how to fix it).`,
		run: runToken,
	}
}

func runToken(ctx context.Context, fs *flag.FlagSet, args []string, out, errOut io.Writer) int {
	var s settings
	s.register(fs)
	asJSON := fs.Bool("json", false, `print {"token", "expiry", "role"} as JSON`)
	if st, ok := parse(fs, args, out); !ok {
		return st
	}
	if err := s.validate(); err != nil {
		fmt.Fprintln(errOut, err)
		return exitUsage
	}
	ctx, cancel := context.WithTimeout(ctx, startupTimeout)
	defer cancel()
	c, closeFn, err := s.open(ctx, s.lazy(cliLogger(errOut)))
	if err != nil {
		fmt.Fprintln(errOut, err)
		return exitFail
	}
	defer closeFn()
	if c.TokenSource() == nil {
		fmt.Fprintln(errOut, "lakebase: this configuration uses no token")
		return exitFail
	}
	tok, err := c.TokenSource().Token(ctx)
	if err != nil {
		fmt.Fprintln(errOut, "lakebase: cannot get a credential:", err)
		return exitFail
	}
	if *asJSON {
		b, _ := json.Marshal(struct {
			Token  string `json:"token"`
			Expiry string `json:"expiry"`
			Role   string `json:"role"`
		}{tok.Value, tok.Expiry.UTC().Format(time.RFC3339), c.Role()})
		fmt.Fprintln(out, string(b))
		return exitOK
	}
	fmt.Fprintln(out, tok.Value)
	return exitOK
}

func envCommand() command {
	return command{
		name:    "env",
		summary: "print PG* export lines for the resolved settings",
		usage:   "[--with-password] [settings flags]",
		help: `Prints the resolved connection settings as shell export lines, for libpq
tools and scripts:

    eval "$(lakebase env)"            # PGHOST PGPORT PGUSER PGDATABASE PGSSLMODE (PGSSLROOTCERT)
    eval "$(lakebase env --with-password)" && psql   # also PGPASSWORD, valid until it expires

PGSSLMODE is the mode the library uses (verify-full unless disable was
asked for). PGSSLROOTCERT is printed when a CA file is configured; with the
system roots it is "system", which libpq 16 and later understand (older
libpq needs a CA file or PGSSLMODE=require).
PGPASSWORD is printed only with --with-password: the token is a secret and
stops working for new logins when it expires (within an hour); for
long-running tools use "lakebase proxy" instead.`,
		run: runEnv,
	}
}

func runEnv(ctx context.Context, fs *flag.FlagSet, args []string, out, errOut io.Writer) int {
	var s settings
	s.register(fs)
	withPassword := fs.Bool("with-password", false, "also print PGPASSWORD (a current token)")
	if st, ok := parse(fs, args, out); !ok {
		return st
	}
	if err := s.validate(); err != nil {
		fmt.Fprintln(errOut, err)
		return exitUsage
	}
	ctx, cancel := context.WithTimeout(ctx, startupTimeout)
	defer cancel()
	c, closeFn, err := s.open(ctx, s.lazy(cliLogger(errOut)))
	if err != nil {
		fmt.Fprintln(errOut, err)
		return exitFail
	}
	defer closeFn()
	rc := c.Config()
	mode := string(sslmode.VerifyFull)
	if m, err := sslmode.Parse(rc.SSLMode); err == nil && m == sslmode.Disable {
		mode = string(sslmode.Disable)
	}
	vars := map[string]string{
		"PGHOST": rc.Host, "PGPORT": strconv.Itoa(rc.Port), "PGUSER": c.Role(), "PGDATABASE": rc.Database, "PGSSLMODE": mode,
	}
	if mode != string(sslmode.Disable) {
		vars["PGSSLROOTCERT"] = rc.SSLRootCert
		if rc.SSLRootCert == "" {
			vars["PGSSLROOTCERT"] = "system"
		}
	}
	if *withPassword {
		if c.TokenSource() == nil {
			fmt.Fprintln(errOut, "lakebase: this configuration uses no token")
			return exitFail
		}
		tok, err := c.TokenSource().Token(ctx)
		if err != nil {
			fmt.Fprintln(errOut, "lakebase: cannot get a credential:", err)
			return exitFail
		}
		vars["PGPASSWORD"] = tok.Value
	}
	names := make([]string, 0, len(vars))
	for k := range vars {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		fmt.Fprintf(out, "export %s=%s\n", k, shellQuote(vars[k]))
	}
	return exitOK
}

// shellQuote quotes s for a POSIX shell.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
