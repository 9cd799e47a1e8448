package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"time"

	"github.com/databricks/databricks-sdk-go/config"

	"github.com/lakebase-go/lakebase/connector"
	"github.com/lakebase-go/lakebase/tokensource"
)

// settings are the connection flags every command shares.
type settings struct {
	endpoint, instance, host, database, user, profile string
	port                                              int
	earlyRefresh, safetyMargin, tokenTTL              time.Duration
}

func (s *settings) register(fs *flag.FlagSet) {
	fs.StringVar(&s.endpoint, "endpoint", "", "autoscaling endpoint `name` projects/P/branches/B/endpoints/E (default $LAKEBASE_ENDPOINT)")
	fs.StringVar(&s.instance, "instance", "", "provisioned database instance `name` (default $LAKEBASE_INSTANCE)")
	fs.StringVar(&s.host, "host", "", "Postgres `host` (default $PGHOST, else looked up from the endpoint or instance)")
	fs.IntVar(&s.port, "port", 0, "Postgres `port` (default $PGPORT, else 5432)")
	fs.StringVar(&s.database, "database", "", "database `name` (default $PGDATABASE, else databricks_postgres)")
	fs.StringVar(&s.user, "user", "", "Postgres `role` to log in as (default $PGUSER, $DATABRICKS_CLIENT_ID, else the workspace identity)")
	fs.StringVar(&s.profile, "profile", "", "Databricks configuration `profile` of ~/.databrickscfg (default: the SDK's resolution: DATABRICKS_* variables, $DATABRICKS_CONFIG_PROFILE, DEFAULT)")
	fs.DurationVar(&s.earlyRefresh, "token-early-refresh", 0, "refresh tokens this long before they expire, at least a quarter of their lifetime (tokensource.Options.EarlyRefresh; default 2m)")
	fs.DurationVar(&s.safetyMargin, "token-safety-margin", 0, "never use a token that expires within this (tokensource.Options.SafetyMargin; default 30s; lower it for tokens of a few seconds)")
	fs.DurationVar(&s.tokenTTL, "token-ttl", 0, "ask for tokens of this lifetime, 5m to 1h (autoscaling endpoints; default: the service's, 1h)")
}

// config is the connector configuration of the flags: set fields are the
// flags, every other one falls back to the environment in connector.New.
func (s *settings) config(logger *slog.Logger) connector.Config {
	c := connector.Config{
		Endpoint: s.endpoint, Instance: s.instance, Host: s.host, Port: s.port, Database: s.database, User: s.user,
		TokenTTL: s.tokenTTL, Logger: logger,
		Token: tokensource.Options{EarlyRefresh: s.earlyRefresh, SafetyMargin: s.safetyMargin},
	}
	if s.profile != "" {
		// The connector's own client with the SDK's unified
		// authentication, from this profile.
		c.WorkspaceConfig = &config.Config{Profile: s.profile}
	}
	return c
}

// lazy is config with lazy token fetching: the short-lived commands fetch
// a token only when they print one, and start no refresh goroutine.
func (s *settings) lazy(logger *slog.Logger) connector.Config {
	c := s.config(logger)
	c.Token.Mode = tokensource.Lazy
	return c
}

// open builds the connector as connector.New does; the returned function
// closes it.
func (s *settings) open(ctx context.Context, cfg connector.Config) (*connector.Connector, func(), error) {
	c, err := connector.New(ctx, cfg)
	if err != nil {
		return nil, nil, err
	}
	return c, func() { _ = c.Close() }, nil
}

// validate rejects negative durations (tokensource would silently treat
// them as the defaults) and contradictory flags.
func (s *settings) validate() error {
	for name, d := range map[string]time.Duration{"--token-early-refresh": s.earlyRefresh, "--token-safety-margin": s.safetyMargin, "--token-ttl": s.tokenTTL} {
		if d < 0 {
			return fmt.Errorf("lakebase: %s: negative duration %v (fix: use a positive duration such as 30s, or leave it out for the default)", name, d)
		}
	}
	if s.endpoint != "" && s.instance != "" {
		return fmt.Errorf("lakebase: --endpoint and --instance are both set (fix: give the one for your database)")
	}
	return nil
}

// cliLogger is the logger of the short-lived commands: warnings and errors
// on stderr.
func cliLogger(w interface{ Write([]byte) (int, error) }) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelWarn}))
}
