package connector

import (
	"log/slog"
	"maps"
	"os"
	"strconv"
	"strings"
	"time"
)

// envString is a string field of Config that falls back to the first
// non-empty variable of vars, then to def.
type envString struct {
	field *string
	vars  []string
	def   string
}

// envRuntimeParams are the run-time parameters libpq takes from the
// environment, read through LookupEnv like every other variable (pgx would
// read the process environment directly).
var envRuntimeParams = map[string]string{"PGOPTIONS": "options", "PGTZ": "timezone", "PGDATESTYLE": "datestyle"}

// withEnv fills the zero fields of cfg from the environment (through
// LookupEnv) and the defaults, then validates what can be validated with no
// network. It never mutates cfg.
func withEnv(cfg Config) (resolved, error) {
	env := cfg.LookupEnv
	if env == nil {
		env = os.LookupEnv
	}
	get := func(key string) string {
		v, _ := env(key)
		return strings.TrimSpace(v)
	}
	r := resolved{Config: cfg, env: env}
	c := &r.Config
	c.RuntimeParams = maps.Clone(cfg.RuntimeParams)
	if c.RuntimeParams == nil {
		c.RuntimeParams = map[string]string{}
	}
	for key, param := range envRuntimeParams {
		if _, set := c.RuntimeParams[param]; !set {
			if v := get(key); v != "" {
				c.RuntimeParams[param] = v
			}
		}
	}
	if c.Endpoint == "" && c.Instance == "" {
		c.Endpoint, c.Instance = get(EnvEndpoint), get(EnvInstance)
	}
	r.hostFromEnv = c.Host == "" && get(EnvHost) != ""
	for _, f := range []envString{
		{&c.Host, []string{EnvHost}, ""},
		{&c.Database, []string{EnvDatabase}, DefaultDatabase},
		{&c.User, []string{EnvUser, EnvClientID}, ""},
		{&c.SSLMode, []string{EnvSSLMode}, ""},
		{&c.SSLRootCert, []string{EnvSSLRootCert}, ""},
		{&c.AppName, []string{EnvAppName}, DefaultAppName},
	} {
		for _, v := range f.vars {
			if *f.field == "" {
				*f.field = get(v)
			}
		}
		if *f.field == "" {
			*f.field = f.def
		}
	}
	if err := envNumbers(c, get); err != nil {
		return r, err
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if err := validate(c); err != nil {
		return r, err
	}
	return r, withReadOnlyEnv(&r, get)
}

// envNumbers fills Port and ConnectTimeout from PGPORT and
// PGCONNECT_TIMEOUT, then the defaults.
func envNumbers(c *Config, get func(string) string) error {
	if v := get(EnvPort); c.Port == 0 && v != "" {
		p, err := strconv.Atoi(v)
		if err != nil || p <= 0 || p > 65535 {
			return &ConfigError{Setting: "Port (" + EnvPort + ")", Problem: "not a TCP port number", Fix: "set PGPORT to a number from 1 to 65535, usually 5432"}
		}
		c.Port = p
	}
	if v := get(EnvConnectTimeout); c.ConnectTimeout == 0 && v != "" {
		s, err := strconv.Atoi(v)
		if err != nil || s < 0 {
			return &ConfigError{Setting: "ConnectTimeout (" + EnvConnectTimeout + ")", Problem: "not a whole number of seconds", Fix: "set PGCONNECT_TIMEOUT to seconds, for example 10"}
		}
		c.ConnectTimeout = time.Duration(s) * time.Second
	}
	if c.Port == 0 {
		c.Port = DefaultPort
	}
	if c.ConnectTimeout == 0 {
		c.ConnectTimeout = DefaultConnectTimeout
	}
	return nil
}

// validate checks the resolved settings that need no network and no file:
// ranges, forms and combinations.
func validate(c *Config) error {
	tokenAuth := c.Password == "" && c.TokenSource == nil
	switch {
	case c.Port < 0 || c.Port > 65535:
		return &ConfigError{Setting: "Port", Problem: "not a TCP port number", Fix: "use a number from 1 to 65535, usually 5432"}
	case c.ConnectTimeout < 0:
		return &ConfigError{Setting: "ConnectTimeout", Problem: "negative", Fix: "use a positive duration or zero for the default"}
	case c.Endpoint != "" && c.Instance != "":
		return &ConfigError{Setting: "Endpoint/Instance (" + EnvEndpoint + "/" + EnvInstance + ")", Problem: "both are set", Fix: "set only the one for your database: Endpoint for autoscaling projects, Instance for provisioned instances"}
	case c.Endpoint != "" && !validEndpointName(c.Endpoint):
		return &ConfigError{Setting: "Endpoint (" + EnvEndpoint + ")", Problem: "not an endpoint resource name", Fix: `use the form "projects/{project}/branches/{branch}/endpoints/{endpoint}"`}
	case c.Token.Logger != nil || c.Token.TracerProvider != nil || c.Token.MeterProvider != nil:
		return &ConfigError{Setting: "Token.Logger/TracerProvider/MeterProvider", Problem: "set on the token options, which take them from Config",
			Fix: "set Config.Logger, Config.TracerProvider and Config.MeterProvider instead (one of each per Config)"}
	case c.Workspace != nil && c.WorkspaceConfig != nil:
		return &ConfigError{Setting: "Workspace/WorkspaceConfig", Problem: "both are set", Fix: "pass either a workspace client or the SDK settings to build one from, not both"}
	case c.Password != "" && c.TokenSource != nil:
		return &ConfigError{Setting: "Password/TokenSource", Problem: "both are set", Fix: "set Password for native Postgres authentication or TokenSource for tokens, not both"}
	case tokenAuth && c.Endpoint == "" && c.Instance == "":
		return &ConfigError{Setting: "Endpoint (" + EnvEndpoint + ")", Problem: "no database to mint tokens for", Fix: "set Config.Endpoint or LAKEBASE_ENDPOINT (autoscaling), Config.Instance or LAKEBASE_INSTANCE (provisioned), or supply Config.TokenSource"}
	case c.Host == "" && c.Endpoint == "" && c.Instance == "":
		return &ConfigError{Setting: "Host (" + EnvHost + ")", Problem: "no host and nothing to resolve it from", Fix: "set Config.Host or PGHOST, or Endpoint/Instance so the host can be looked up"}
	case c.TokenTTL != 0 && c.Instance != "":
		return &ConfigError{Setting: "TokenTTL", Problem: "not supported for provisioned instances", Fix: "leave TokenTTL zero with Instance"}
	case c.TokenTTL != 0 && (c.TokenTTL < 5*time.Minute || c.TokenTTL > time.Hour):
		return &ConfigError{Setting: "TokenTTL", Problem: "outside 5m..1h", Fix: "use a lifetime from 5 minutes to 1 hour, or zero for the service default"}
	}
	return nil
}
