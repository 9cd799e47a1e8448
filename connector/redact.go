package connector

import (
	"encoding/json"
	"fmt"
	"log/slog"
)

// What never prints: every way a Config or a Connector can be formatted,
// logged or encoded leaves out Password and tokens
// (TestNoSecretInAnyEncoding in internal/reliability checks them all).

// String describes c for logs and debugging: Password is never printed
// (only whether one is set), and neither is anything a token source holds.
func (c Config) String() string {
	pw := ""
	if c.Password != "" {
		pw = " password=REDACTED"
	}
	ts := ""
	if c.TokenSource != nil {
		ts = " token_source=set"
	}
	ro := ""
	if c.ReadOnly {
		ro = " read_only=true"
	}
	return fmt.Sprintf("connector.Config{endpoint=%q instance=%q host=%q port=%d database=%q user=%q sslmode=%q sslrootcert=%q app=%q%s%s%s}",
		c.Endpoint, c.Instance, c.Host, c.Port, c.Database, c.User, c.SSLMode, c.SSLRootCert, c.AppName, ro, pw, ts)
}

// GoString is String, so %#v does not print Password either.
func (c Config) GoString() string { return c.String() }

// LogValue implements slog.LogValuer without Password.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("endpoint", c.Endpoint), slog.String("instance", c.Instance),
		slog.String("host", c.Host), slog.Int("port", c.Port), slog.String("database", c.Database),
		slog.String("user", c.User), slog.String("sslmode", c.SSLMode), slog.Bool("password_set", c.Password != ""))
}

// MarshalJSON encodes the settings of c without Password.
func (c Config) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Endpoint    string `json:"endpoint,omitempty"`
		Instance    string `json:"instance,omitempty"`
		Host        string `json:"host,omitempty"`
		Port        int    `json:"port,omitempty"`
		Database    string `json:"database,omitempty"`
		User        string `json:"user,omitempty"`
		SSLMode     string `json:"sslmode,omitempty"`
		SSLRootCert string `json:"sslrootcert,omitempty"`
		AppName     string `json:"application_name,omitempty"`
		PasswordSet bool   `json:"password_set"`
	}{c.Endpoint, c.Instance, c.Host, c.Port, c.Database, c.User, c.SSLMode, c.SSLRootCert, c.AppName, c.Password != ""})
}

// String describes c for logs and debugging: host, port, database, role
// and how it authenticates, never a token or password.
func (c *Connector) String() string {
	if c == nil {
		return "connector.Connector(nil)"
	}
	return fmt.Sprintf("connector.Connector{host=%q port=%d database=%q role=%q auth=%s}", c.host, c.cfg.Port, c.db, c.role, c.auth())
}

// GoString is String, so %#v never prints the fields.
func (c *Connector) GoString() string { return c.String() }

// Format implements fmt.Formatter: every verb prints String (the fields,
// which hold the password and the token cache, are never printed).
func (c *Connector) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(c.String())) }

// LogValue implements slog.LogValuer without secrets.
func (c *Connector) LogValue() slog.Value {
	if c == nil {
		return slog.StringValue(c.String())
	}
	return slog.GroupValue(slog.String("host", c.host), slog.Int("port", c.cfg.Port), slog.String("database", c.db),
		slog.String("role", c.role), slog.String("auth", c.auth()))
}

// MarshalJSON encodes what String shows.
func (c *Connector) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Host     string `json:"host"`
		Port     int    `json:"port"`
		Database string `json:"database"`
		Role     string `json:"role"`
		Auth     string `json:"auth"`
	}{c.host, c.cfg.Port, c.db, c.role, c.auth()})
}
