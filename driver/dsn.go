package driver

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/lakebase-go/lakebase/connector"
	"github.com/lakebase-go/lakebase/tokensource"
)

// DSNError reports a malformed data source name. It names the key and never
// contains a value (the DSN may hold a password).
type DSNError struct {
	Key     string // the offending key, or "" for a syntax error
	Problem string // what is wrong (never quoting a value)
	Fix     string // what to do about it
}

// Error implements error.
func (e *DSNError) Error() string {
	msg := "driver: invalid data source name"
	if e.Key != "" {
		msg += ": key " + strconv.Quote(e.Key)
	}
	msg += ": " + e.Problem
	if e.Fix != "" {
		msg += " (fix: " + e.Fix + ")"
	}
	return msg
}

// As lets errors.As(err, &ce) with ce a *connector.ConfigError match a
// DSNError, so a configuration mistake is one type from every entry point.
// The ConfigError's Setting is "DSN key <key>" (or "DSN").
func (e *DSNError) As(target any) bool {
	ce, ok := target.(**connector.ConfigError)
	if !ok {
		return false
	}
	setting := "DSN"
	if e.Key != "" {
		setting = "DSN key " + strconv.Quote(e.Key)
	}
	*ce = &connector.ConfigError{Setting: setting, Problem: e.Problem, Fix: e.Fix}
	return true
}

// DSN is a parsed data source name: the connector configuration plus the
// Databricks profile to build the workspace client from.
type DSN struct {
	Config  connector.Config // the settings of the DSN's keys; zero fields fall back to the environment
	Profile string           // databricks_profile: a ~/.databrickscfg profile; "" uses the SDK's unified auth
}

// keys lists every accepted key and what it sets.
var keys = map[string]func(d *DSN, v string) error{
	"host":     func(d *DSN, v string) error { d.Config.Host = v; return nil },
	"port":     setPort,
	"dbname":   func(d *DSN, v string) error { d.Config.Database = v; return nil },
	"database": func(d *DSN, v string) error { d.Config.Database = v; return nil },
	"user":     func(d *DSN, v string) error { d.Config.User = v; return nil },
	"password": func(d *DSN, v string) error { d.Config.Password = v; return nil },
	"sslmode":  func(d *DSN, v string) error { d.Config.SSLMode = v; return nil },
	"sslrootcert": func(d *DSN, v string) error {
		d.Config.SSLRootCert = v
		return nil
	},
	"application_name": func(d *DSN, v string) error { d.Config.AppName = v; return nil },
	"connect_timeout":  setConnectTimeout,
	"search_path":      setRuntimeParam("search_path"),
	"options":          setRuntimeParam("options"),
	"lakebase_endpoint": func(d *DSN, v string) error {
		d.Config.Endpoint = v
		return nil
	},
	"lakebase_instance": func(d *DSN, v string) error {
		d.Config.Instance = v
		return nil
	},
	"databricks_profile": func(d *DSN, v string) error { d.Profile = v; return nil },
	"refresh":            setRefresh,
	"token_ttl":          setTokenTTL,
}

func acceptedKeys() string {
	names := make([]string, 0, len(keys))
	for k := range keys {
		names = append(names, k)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

func setPort(d *DSN, v string) error {
	p, err := strconv.Atoi(v)
	if err != nil || p < 1 || p > 65535 {
		return &DSNError{Key: "port", Problem: "not a TCP port number", Fix: "use a number from 1 to 65535, usually 5432"}
	}
	d.Config.Port = p
	return nil
}

func setConnectTimeout(d *DSN, v string) error {
	s, err := strconv.Atoi(v)
	if err != nil || s < 0 {
		return &DSNError{Key: "connect_timeout", Problem: "not a whole number of seconds", Fix: "for example connect_timeout=10"}
	}
	d.Config.ConnectTimeout = time.Duration(s) * time.Second
	return nil
}

func setRuntimeParam(name string) func(*DSN, string) error {
	return func(d *DSN, v string) error {
		if d.Config.RuntimeParams == nil {
			d.Config.RuntimeParams = map[string]string{}
		}
		d.Config.RuntimeParams[name] = v
		return nil
	}
}

func setRefresh(d *DSN, v string) error {
	m, err := tokensource.ParseMode(v)
	if err != nil {
		return &DSNError{Key: "refresh", Problem: "unknown refresh mode", Fix: "use refresh=eager (default, background refresh) or refresh=lazy (no background goroutine)"}
	}
	d.Config.Token.Mode = m
	return nil
}

func setTokenTTL(d *DSN, v string) error {
	ttl, err := time.ParseDuration(v)
	if err != nil || ttl <= 0 {
		return &DSNError{Key: "token_ttl", Problem: "not a positive duration", Fix: "for example token_ttl=30m (5m to 1h)"}
	}
	d.Config.TokenTTL = ttl
	return nil
}

// ParseDSN parses a libpq keyword/value string or a postgres:// URL. Keys it
// does not know are errors, so a typo such as "lakebase_endpiont" is caught
// instead of silently ignored.
func ParseDSN(dsn string) (DSN, error) {
	var (
		pairs [][2]string
		err   error
	)
	trimmed := strings.TrimSpace(dsn)
	if strings.HasPrefix(trimmed, "postgres://") || strings.HasPrefix(trimmed, "postgresql://") {
		pairs, err = parseURL(trimmed)
	} else {
		pairs, err = parseKeywordValue(trimmed)
	}
	if err != nil {
		return DSN{}, err
	}
	var d DSN
	seen := map[string]bool{}
	for _, kv := range pairs {
		k, v := kv[0], kv[1]
		set, ok := keys[k]
		if !ok {
			if !keyShaped(k) {
				// Not a key anybody would type: perhaps part of a value
				// with an unquoted space. Never echo it.
				return DSN{}, &DSNError{Problem: "an unknown key (not shown: it may be part of a value with an unquoted space)", Fix: "quote values that contain spaces (key='a value'); accepted keys are " + acceptedKeys()}
			}
			return DSN{}, &DSNError{Key: k, Problem: "unknown key", Fix: "accepted keys are " + acceptedKeys()}
		}
		if seen[k] {
			return DSN{}, &DSNError{Key: k, Problem: "given more than once", Fix: "give each key once"}
		}
		seen[k] = true
		if err := set(&d, v); err != nil {
			return DSN{}, err
		}
	}
	return d, nil
}

// keyShaped reports whether k looks like a connection-string key: lower
// case letters, digits and underscores, not too long.
func keyShaped(k string) bool {
	if k == "" || len(k) > 40 {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if !(c >= 'a' && c <= 'z' || c == '_' || i > 0 && c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// parseURL parses postgres://user:password@host:port/dbname?key=value.
func parseURL(s string) ([][2]string, error) {
	u, err := url.Parse(s)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // url.Error quotes the whole URL, password included
		}
		return nil, &DSNError{Problem: "not a valid URL: " + redactURLError(err), Fix: "use postgres://user@host:5432/dbname?lakebase_endpoint=..."}
	}
	if u.Opaque != "" || u.Fragment != "" {
		return nil, &DSNError{Problem: "not a valid postgres URL", Fix: "use postgres://user@host:5432/dbname?lakebase_endpoint=..."}
	}
	var pairs [][2]string
	if u.User != nil {
		if name := u.User.Username(); name != "" {
			pairs = append(pairs, [2]string{"user", name})
		}
		if pw, ok := u.User.Password(); ok {
			pairs = append(pairs, [2]string{"password", pw})
		}
	}
	if h := u.Hostname(); h != "" {
		pairs = append(pairs, [2]string{"host", h})
	}
	if p := u.Port(); p != "" {
		pairs = append(pairs, [2]string{"port", p})
	}
	if db := strings.TrimPrefix(u.Path, "/"); db != "" {
		pairs = append(pairs, [2]string{"dbname", db})
	}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return nil, &DSNError{Problem: "malformed query string", Fix: "escape values with percent-encoding"}
	}
	names := make([]string, 0, len(q))
	for k := range q {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		vs := q[k]
		if len(vs) > 1 {
			return nil, &DSNError{Key: k, Problem: "given more than once", Fix: "give each key once"}
		}
		pairs = append(pairs, [2]string{k, vs[0]})
	}
	return pairs, nil
}

// redactURLError keeps only the category of a url parse error.
func redactURLError(err error) string {
	msg := err.Error()
	if i := strings.Index(msg, " "); i > 0 && strings.Contains(msg, "\"") {
		// messages like `invalid port ":x" after host` quote input
		return msg[:i]
	}
	return msg
}

// parseKeywordValue parses libpq's key=value form: pairs separated by
// whitespace, values optionally single-quoted with \' and \\ escapes.
func parseKeywordValue(s string) ([][2]string, error) {
	var pairs [][2]string
	i := 0
	for {
		for i < len(s) && isSpace(s[i]) {
			i++
		}
		if i >= len(s) {
			return pairs, nil
		}
		start := i
		for i < len(s) && s[i] != '=' && !isSpace(s[i]) {
			i++
		}
		key := s[start:i]
		for i < len(s) && isSpace(s[i]) {
			i++
		}
		if i >= len(s) || s[i] != '=' {
			// This word may be the rest of a value with an unquoted space
			// (a password, say): never echo it.
			e := &DSNError{Problem: `a word without "=" (not shown: it may be part of a value)`, Fix: "write key=value pairs separated by spaces, and quote values that contain spaces: key='a value'"}
			if len(pairs) > 0 {
				e.Problem = `a word without "=" after the value of key ` + strconv.Quote(pairs[len(pairs)-1][0]) + " (not shown: it may be part of that value)"
			}
			return nil, e
		}
		if key == "" {
			return nil, &DSNError{Problem: `"=" without a key`, Fix: "write key=value pairs separated by spaces"}
		}
		i++ // '='
		for i < len(s) && isSpace(s[i]) {
			i++
		}
		var val strings.Builder
		if i < len(s) && s[i] == '\'' {
			i++
			closed := false
			for i < len(s) {
				ch := s[i]
				if ch == '\\' && i+1 < len(s) {
					val.WriteByte(s[i+1])
					i += 2
					continue
				}
				if ch == '\'' {
					closed = true
					i++
					break
				}
				val.WriteByte(ch)
				i++
			}
			if !closed {
				return nil, &DSNError{Key: key, Problem: "unterminated quoted value", Fix: `close the value with ' (escape quotes inside as \')`}
			}
		} else {
			for i < len(s) && !isSpace(s[i]) {
				if s[i] == '\\' && i+1 < len(s) {
					i++
				}
				val.WriteByte(s[i])
				i++
			}
		}
		pairs = append(pairs, [2]string{key, val.String()})
	}
}

func isSpace(b byte) bool {
	return b == ' ' || b == '\t' || b == '\n' || b == '\r' || b == '\f' || b == '\v'
}

// GoString is String, so %#v never prints the password.
func (d DSN) GoString() string { return d.String() }

// Format implements fmt.Formatter: every verb prints String.
func (d DSN) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(d.String())) }

// LogValue implements slog.LogValuer without the password.
func (d DSN) LogValue() slog.Value { return slog.StringValue(d.String()) }

// MarshalJSON encodes the DSN without the password.
func (d DSN) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Config  connector.Config `json:"config"`
		Profile string           `json:"databricks_profile,omitempty"`
	}{d.Config, d.Profile})
}

// String renders d for debugging without the password.
func (d DSN) String() string {
	c := d.Config
	pw := ""
	if c.Password != "" {
		pw = " password=REDACTED"
	}
	return fmt.Sprintf("host=%s port=%d dbname=%s user=%s%s sslmode=%s lakebase_endpoint=%s lakebase_instance=%s refresh=%s",
		c.Host, c.Port, c.Database, c.User, pw, c.SSLMode, c.Endpoint, c.Instance, c.Token.Mode)
}
