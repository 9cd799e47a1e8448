package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
)

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
}

// Exit statuses.
const (
	exitOK    = 0
	exitFail  = 1 // the command ran and failed (doctor found a problem, a login failed, ...)
	exitUsage = 2 // bad command line
)

// command is one subcommand.
type command struct {
	name    string
	summary string
	usage   string // the synopsis after "lakebase NAME"
	help    string // the long description printed by --help
	run     func(ctx context.Context, fs *flag.FlagSet, args []string, out, errOut io.Writer) int
}

func commands() []command {
	return []command{proxyCommand(), tokenCommand(), envCommand(), doctorCommand()}
}

// run is the whole command: it parses args and runs one subcommand with
// stdout out and stderr errOut, returning the exit status. Tests call it
// in-process.
func run(ctx context.Context, args []string, out, errOut io.Writer) int {
	if len(args) == 0 {
		topUsage(errOut)
		return exitUsage
	}
	name := args[0]
	switch name {
	case "-h", "-help", "--help", "help":
		if name == "help" && len(args) > 1 {
			for _, c := range commands() {
				if c.name == args[1] {
					return c.run(ctx, newFlagSet(c, errOut), []string{"--help"}, out, errOut)
				}
			}
			fmt.Fprintf(errOut, "lakebase: unknown command %q\n", args[1])
			return exitUsage
		}
		topUsage(out)
		return exitOK
	}
	for _, c := range commands() {
		if c.name != name {
			continue
		}
		fs := newFlagSet(c, errOut)
		return c.run(ctx, fs, args[1:], out, errOut)
	}
	fmt.Fprintf(errOut, "lakebase: unknown command %q\n\n", name)
	topUsage(errOut)
	return exitUsage
}

// newFlagSet is a flag set that prints c's help to w.
func newFlagSet(c command, w io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("lakebase "+c.name, flag.ContinueOnError)
	fs.SetOutput(w)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: lakebase %s %s\n\n%s\n\nFlags:\n", c.name, c.usage, strings.TrimSpace(c.help))
		fs.PrintDefaults()
	}
	return fs
}

// parse parses args into fs; --help prints the help to out and returns
// exitOK, other errors exitUsage. ok says whether to go on.
func parse(fs *flag.FlagSet, args []string, out io.Writer) (status int, ok bool) {
	usage := fs.Usage
	fs.Usage = func() {} // the flag package would print it to stderr for -h too
	err := fs.Parse(args)
	fs.Usage = usage
	if errors.Is(err, flag.ErrHelp) {
		fs.SetOutput(out)
		usage()
		return exitOK, false
	}
	if err != nil {
		// The flag package has printed the error.
		fmt.Fprintf(fs.Output(), "run \"%s --help\" for the flags\n", fs.Name())
		return exitUsage, false
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(fs.Output(), "%s: unexpected argument %q\n", fs.Name(), fs.Arg(0))
		return exitUsage, false
	}
	return 0, true
}

func topUsage(w io.Writer) {
	fmt.Fprint(w, `lakebase: connect tools that are not Go programs to Databricks Lakebase with current OAuth credentials.

Usage: lakebase <command> [flags]

Commands:
`)
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-8s %s\n", c.name, c.summary)
	}
	fmt.Fprint(w, `
Settings resolve as for a Go program using package connector: the flags
(--endpoint, --instance, --host, --port, --database, --user, --profile), then
LAKEBASE_ENDPOINT, LAKEBASE_INSTANCE, PGHOST, PGPORT, PGDATABASE, PGUSER,
PGSSLMODE, PGSSLROOTCERT, PGCONNECT_TIMEOUT and the Databricks SDK's own
variables (DATABRICKS_HOST, DATABRICKS_TOKEN, DATABRICKS_CLIENT_ID/SECRET,
DATABRICKS_CONFIG_PROFILE, ~/.databrickscfg).

Run "lakebase <command> --help" for a command's flags.
`)
}
