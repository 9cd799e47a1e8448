package connector

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func envMap(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v, ok := m[k]
		return v, ok
	}
}

func TestWithEnvFallbacks(t *testing.T) {
	env := map[string]string{
		EnvEndpoint:       "projects/p/branches/b/endpoints/e",
		EnvHost:           "db.example.com",
		EnvPort:           "6543",
		EnvDatabase:       "appdb",
		EnvUser:           "app@example.com",
		EnvClientID:       "client-id-not-used",
		EnvSSLMode:        "require",
		EnvSSLRootCert:    "/etc/ca.pem",
		EnvAppName:        "myapp",
		EnvConnectTimeout: "7",
	}
	r, err := withEnv(Config{LookupEnv: envMap(env)})
	if err != nil {
		t.Fatal(err)
	}
	c := r.Config
	checks := []struct{ name, got, want string }{
		{"Endpoint", c.Endpoint, env[EnvEndpoint]},
		{"Host", c.Host, "db.example.com"},
		{"Database", c.Database, "appdb"},
		{"User", c.User, "app@example.com"},
		{"SSLMode", c.SSLMode, "require"},
		{"SSLRootCert", c.SSLRootCert, "/etc/ca.pem"},
		{"AppName", c.AppName, "myapp"},
	}
	for _, ch := range checks {
		if ch.got != ch.want {
			t.Errorf("%s = %q, want %q", ch.name, ch.got, ch.want)
		}
	}
	if c.Port != 6543 {
		t.Errorf("Port = %d, want 6543", c.Port)
	}
	if c.ConnectTimeout != 7*time.Second {
		t.Errorf("ConnectTimeout = %v, want 7s", c.ConnectTimeout)
	}
	if !r.hostFromEnv {
		t.Error("hostFromEnv = false, want true")
	}
}

func TestWithEnvDefaultsAndPrecedence(t *testing.T) {
	env := map[string]string{
		EnvInstance: "inst",
		EnvHost:     "env-host",
		EnvClientID: "sp-app-id",
		EnvPort:     "1111",
	}
	r, err := withEnv(Config{Host: "explicit-host", Port: 2222, LookupEnv: envMap(env)})
	if err != nil {
		t.Fatal(err)
	}
	c := r.Config
	if c.Instance != "inst" || c.Endpoint != "" {
		t.Errorf("Instance/Endpoint = %q/%q", c.Instance, c.Endpoint)
	}
	if c.Host != "explicit-host" || r.hostFromEnv {
		t.Errorf("explicit Host must win over PGHOST: %q (fromEnv %v)", c.Host, r.hostFromEnv)
	}
	if c.Port != 2222 {
		t.Errorf("explicit Port must win: %d", c.Port)
	}
	if c.User != "sp-app-id" {
		t.Errorf("User falls back to DATABRICKS_CLIENT_ID: %q", c.User)
	}
	if c.Database != DefaultDatabase || c.AppName != "lakebase-go" || c.ConnectTimeout != DefaultConnectTimeout {
		t.Errorf("defaults: db=%q app=%q timeout=%v", c.Database, c.AppName, c.ConnectTimeout)
	}

	r, err = withEnv(Config{Endpoint: "projects/a/branches/b/endpoints/c", LookupEnv: envMap(nil)})
	if err != nil {
		t.Fatal(err)
	}
	if r.Port != DefaultPort {
		t.Errorf("default port = %d", r.Port)
	}
}

func TestWithEnvErrors(t *testing.T) {
	ep := "projects/p/branches/b/endpoints/e"
	cases := []struct {
		name    string
		cfg     Config
		env     map[string]string
		setting string
		fix     string
	}{
		{"nothing", Config{}, nil, "Endpoint", "LAKEBASE_ENDPOINT"},
		{"both endpoint and instance", Config{Endpoint: ep, Instance: "i"}, nil, "Endpoint/Instance", "set only the one"},
		{"bad endpoint name", Config{Endpoint: "my-endpoint"}, nil, "Endpoint", "projects/{project}"},
		{"bad PGPORT", Config{Endpoint: ep}, map[string]string{EnvPort: "five"}, "PGPORT", "1 to 65535"},
		{"port out of range", Config{Endpoint: ep, Port: 70000}, nil, "Port", "1 to 65535"},
		{"bad PGCONNECT_TIMEOUT", Config{Endpoint: ep}, map[string]string{EnvConnectTimeout: "soon"}, "PGCONNECT_TIMEOUT", "seconds"},
		{"negative timeout", Config{Endpoint: ep, ConnectTimeout: -time.Second}, nil, "ConnectTimeout", "positive"},
		{"password and token source", Config{Host: "h", Password: "pw", TokenSource: staticSource{}}, nil, "Password/TokenSource", "not both"},
		{"password without host", Config{Password: "pw"}, nil, "Host", "PGHOST"},
		{"ttl too short", Config{Endpoint: ep, TokenTTL: time.Minute}, nil, "TokenTTL", "5 minutes to 1 hour"},
		{"ttl with instance", Config{Instance: "i", TokenTTL: 10 * time.Minute}, nil, "TokenTTL", "zero with Instance"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.LookupEnv = envMap(tc.env)
			_, err := withEnv(tc.cfg)
			var ce *ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("want *ConfigError, got %v", err)
			}
			if !strings.Contains(ce.Setting, tc.setting) {
				t.Errorf("Setting = %q, want it to name %q", ce.Setting, tc.setting)
			}
			if !strings.Contains(err.Error(), tc.fix) {
				t.Errorf("error %q does not say the fix %q", err, tc.fix)
			}
			if strings.Contains(err.Error(), "pw") && tc.cfg.Password != "" {
				t.Errorf("error leaks the password: %q", err)
			}
		})
	}
}
