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

// DSNError reports a malformed data source name, or a value of it that
// cannot work (an sslmode, a root certificate file, a port...). It names the
// key and never contains any part of a value (the DSN may hold a password);
// a key that may itself be part of a value (it follows an unquoted value
// with no separator but a space) is not named either, and after an
// unquoted password nothing of the DSN is named at all.
type DSNError struct {
	Key     string // the offending key, or "" when it is not shown
	Problem string // what is wrong (never quoting a value)
	Fix     string // what to do about it

	cause error // a value-free cause (a file error's errno), if any
}

// Error implements error.
func (e *DSNError) Error() string {
	msg := "driver: invalid data source name"
	if e.Key != "" {
		msg += ": key " + strconv.Quote(e.Key)
	}
	msg += ": " + e.Problem
	if e.cause != nil {
		msg += ": " + e.cause.Error()
	}
	if e.Fix != "" {
		msg += " (fix: " + e.Fix + ")"
	}
	return msg
}

// Unwrap returns the value-free cause, if any (for example the errno of a
// root certificate file that cannot be read, so errors.Is(err,
// fs.ErrNotExist) works).
func (e *DSNError) Unwrap() error { return e.cause }

// Transient reports false: the DSN must change.
func (e *DSNError) Transient() bool { return false }

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
	*ce = &connector.ConfigError{Setting: setting, Problem: e.Problem, Fix: e.Fix, Err: e.cause}
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
	"databricks_profile":   func(d *DSN, v string) error { d.Profile = v; return nil },
	"refresh":              setRefresh,
	"token_ttl":            setTokenTTL,
	"target_session_attrs": setTargetSessionAttrs,
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

// setTargetSessionAttrs maps libpq's target_session_attrs onto
// Config.ReadOnly: read-only and standby turn it on; any, read-write and
// primary (the primary host, the default) leave it as the environment says
// (Config has no "explicitly off").
func setTargetSessionAttrs(d *DSN, v string) error {
	switch strings.ToLower(v) {
	case "read-only", "standby":
		d.Config.ReadOnly = true
		return nil
	case "any", "read-write", "primary":
		return nil
	}
	return &DSNError{Key: "target_session_attrs", Problem: "not a value the connector supports",
		Fix: "use read-only or standby (the endpoint's read-only host), or any, read-write or primary; prefer-standby is not supported (no silent fallback to the primary)"}
}

// pair is one key and value of a DSN.
type pair struct {
	key, val string
	// open: the value was not quoted and only a space may separate it from
	// the next pair, so the next "key" may be part of this value.
	open bool
}

// ParseDSN parses a libpq keyword/value string or a postgres:// URL. Keys it
// does not know are errors, so a typo such as "lakebase_endpiont" is caught
// instead of silently ignored.
func ParseDSN(dsn string) (DSN, error) {
	d, _, err := parse(dsn)
	return d, err
}

// parse is ParseDSN that also returns the pairs.
func parse(dsn string) (DSN, []pair, error) {
	var (
		pairs []pair
		err   error
	)
	trimmed := strings.TrimSpace(dsn)
	if strings.HasPrefix(trimmed, "postgres://") || strings.HasPrefix(trimmed, "postgresql://") {
		pairs, err = parseURL(trimmed)
	} else {
		pairs, err = parseKeywordValue(trimmed)
	}
	if err != nil {
		return DSN{}, nil, err
	}
	var d DSN
	seen := map[string]bool{}
	secret := false // an earlier unquoted password may run on into what follows
	for i, kv := range pairs {
		k, v := kv.key, kv.val
		err := check(&d, seen, k, v)
		if err == nil {
			if k == "password" && kv.open {
				secret = true
			}
			continue
		}
		switch {
		case secret:
			// Whatever this is may be part of the password: name nothing.
			return DSN{}, nil, &DSNError{Problem: `a setting after the unquoted value of key "password" is not valid (not shown: it may be part of the password)`,
				Fix: `quote the password (password='...', with \' and \\ for a quote and a backslash inside), then check the settings after it`}
		case err.Key == k && i > 0 && pairs[i-1].open && keys[k] == nil:
			// An unknown key right after an unquoted value: perhaps part of
			// that value with an unquoted space. Never echo it.
			prev := pairs[i-1].key
			return DSN{}, nil, &DSNError{Problem: "an unknown key after the value of key " + strconv.Quote(prev) + " (not shown: it may be part of that value)",
				Fix: "quote values that contain spaces (key='a value'); " + suggest(k) + "accepted keys are " + acceptedKeys()}
		}
		return DSN{}, nil, err
	}
	return d, pairs, nil
}

// afterPassword is the error for anything wrong after an unquoted
// password, which it may belong to: it names nothing.
func afterPassword() *DSNError {
	return &DSNError{Problem: `a setting after the unquoted value of key "password" is not valid (not shown: it may be part of the password)`,
		Fix: `quote the password (password='...', with \' and \\ for a quote and a backslash inside), then check the settings after it`}
}

// check applies one pair to d.
func check(d *DSN, seen map[string]bool, k, v string) *DSNError {
	set, ok := keys[k]
	if !ok {
		if !keyShaped(k) {
			// Not a key anybody would type: perhaps part of a value with
			// an unquoted space. Never echo it.
			return &DSNError{Problem: "an unknown key (not shown: it may be part of a value with an unquoted space)", Fix: "quote values that contain spaces (key='a value'); accepted keys are " + acceptedKeys()}
		}
		return &DSNError{Key: k, Problem: "unknown key", Fix: suggest(k) + "accepted keys are " + acceptedKeys()}
	}
	if seen[k] {
		return &DSNError{Key: k, Problem: "given more than once", Fix: "give each key once"}
	}
	seen[k] = true
	if err := set(d, v); err != nil {
		var de *DSNError
		if errors.As(err, &de) {
			return de
		}
		return &DSNError{Key: k, Problem: "invalid value", Fix: "check the value"}
	}
	return nil
}

// suggest names the accepted key closest to k, if one is within two edits.
func suggest(k string) string {
	best, dist := "", 3
	for name := range keys {
		if d := editDistance(k, name); d < dist || d == dist && name < best {
			best, dist = name, d
		}
	}
	if best == "" || dist > 2 {
		return ""
	}
	return "did you mean " + strconv.Quote(best) + "? "
}

// editDistance is the Levenshtein distance of two short ASCII strings.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
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
// Only query values can run on into a later key (through an unencoded &),
// and only a query password is treated as one that may.
func parseURL(s string) ([]pair, error) {
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
	var pairs []pair
	if u.User != nil {
		if name := u.User.Username(); name != "" {
			pairs = append(pairs, pair{key: "user", val: name})
		}
		if pw, ok := u.User.Password(); ok {
			pairs = append(pairs, pair{key: "password", val: pw})
		}
	}
	if h := u.Hostname(); h != "" {
		pairs = append(pairs, pair{key: "host", val: h})
	}
	if p := u.Port(); p != "" {
		pairs = append(pairs, pair{key: "port", val: p})
	}
	if db := strings.TrimPrefix(u.Path, "/"); db != "" {
		pairs = append(pairs, pair{key: "dbname", val: db})
	}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return nil, &DSNError{Problem: "malformed query string", Fix: "escape values with percent-encoding"}
	}
	names := make([]string, 0, len(q))
	for k := range q {
		names = append(names, k)
	}
	// A query password first: the keys after it are then never named.
	sort.Slice(names, func(i, j int) bool {
		if (names[i] == "password") != (names[j] == "password") {
			return names[i] == "password"
		}
		return names[i] < names[j]
	})
	for _, k := range names {
		vs := q[k]
		if len(vs) > 1 {
			if _, pw := q["password"]; pw && k != "password" {
				return nil, &DSNError{Problem: `a key given more than once in a query that holds a password (not shown)`, Fix: "give each key once"}
			}
			return nil, &DSNError{Key: k, Problem: "given more than once", Fix: "give each key once"}
		}
		pairs = append(pairs, pair{key: k, val: vs[0], open: k == "password"})
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
func parseKeywordValue(s string) ([]pair, error) {
	var pairs []pair
	secret := false // an unquoted password came before: name nothing after it
	fail := func(e *DSNError) ([]pair, error) {
		if secret {
			return nil, afterPassword()
		}
		return nil, e
	}
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
				e.Problem = `a word without "=" after the value of key ` + strconv.Quote(pairs[len(pairs)-1].key) + " (not shown: it may be part of that value)"
			}
			return fail(e)
		}
		if key == "" {
			return fail(&DSNError{Problem: `"=" without a key`, Fix: "write key=value pairs separated by spaces"})
		}
		i++ // '='
		for i < len(s) && isSpace(s[i]) {
			i++
		}
		var val strings.Builder
		quoted := i < len(s) && s[i] == '\''
		if quoted {
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
				return fail(&DSNError{Key: key, Problem: "unterminated quoted value", Fix: `close the value with ' (escape quotes inside as \')`})
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
		pairs = append(pairs, pair{key: key, val: val.String(), open: !quoted})
		if key == "password" && !quoted {
			secret = true
		}
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
