package driver

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/lakebase-go/lakebase/tokensource"
)

func TestParseDSNKeywordValue(t *testing.T) {
	d, err := ParseDSN(`host=db.example.com port=6543 dbname='my db' user=app@example.com password='p\'w d' ` +
		`sslmode=verify-full sslrootcert=/ca.pem application_name=svc connect_timeout=7 search_path=app ` +
		`lakebase_endpoint=projects/p/branches/b/endpoints/e databricks_profile=dev refresh=lazy token_ttl=30m target_session_attrs=read-only`)
	if err != nil {
		t.Fatal(err)
	}
	c := d.Config
	if c.Host != "db.example.com" || c.Port != 6543 || c.Database != "my db" || c.User != "app@example.com" {
		t.Errorf("host/port/db/user = %q/%d/%q/%q", c.Host, c.Port, c.Database, c.User)
	}
	if c.Password != "p'w d" {
		t.Errorf("password not unescaped correctly (len %d)", len(c.Password))
	}
	if c.SSLMode != "verify-full" || c.SSLRootCert != "/ca.pem" || c.AppName != "svc" || c.ConnectTimeout != 7*time.Second {
		t.Errorf("ssl/app/timeout = %q %q %q %v", c.SSLMode, c.SSLRootCert, c.AppName, c.ConnectTimeout)
	}
	if c.RuntimeParams["search_path"] != "app" {
		t.Errorf("search_path = %q", c.RuntimeParams["search_path"])
	}
	if c.Endpoint != "projects/p/branches/b/endpoints/e" || d.Profile != "dev" || c.Token.Mode != tokensource.Lazy || c.TokenTTL != 30*time.Minute {
		t.Errorf("lakebase keys: %q %q %v %v", c.Endpoint, d.Profile, c.Token.Mode, c.TokenTTL)
	}
	if !c.ReadOnly {
		t.Error("target_session_attrs=read-only did not set ReadOnly")
	}
	if strings.Contains(d.String(), "p'w d") {
		t.Error("DSN.String leaks the password")
	}
}

func TestParseDSNURL(t *testing.T) {
	d, err := ParseDSN("postgresql://app%40example.com:s3cret@db.example.com:6543/appdb?sslmode=require&lakebase_instance=inst&refresh=eager")
	if err != nil {
		t.Fatal(err)
	}
	c := d.Config
	if c.User != "app@example.com" || c.Password != "s3cret" || c.Host != "db.example.com" || c.Port != 6543 || c.Database != "appdb" {
		t.Errorf("got user=%q host=%q port=%d db=%q", c.User, c.Host, c.Port, c.Database)
	}
	if c.SSLMode != "require" || c.Instance != "inst" || c.Token.Mode != tokensource.Eager {
		t.Errorf("query keys: %q %q %v", c.SSLMode, c.Instance, c.Token.Mode)
	}
	d, err = ParseDSN("postgres://")
	if err != nil {
		t.Fatalf("empty URL: %v", err)
	}
	if d.Config.Host != "" || d.Config.Port != 0 {
		t.Errorf("empty URL set fields: %+v", d)
	}
}

func TestParseDSNErrorsNameTheKeyNeverTheSecret(t *testing.T) {
	const secret = "SUPERSECRETpw"
	cases := []struct {
		dsn string
		key string
	}{
		{"lakebase_endpiont=x password=" + secret, "lakebase_endpiont"},
		{"port=abc password=" + secret, "port"},
		{"port=0", "port"},
		{"refresh=sometimes password=" + secret, "refresh"},
		{"token_ttl=1hour", "token_ttl"},
		{"target_session_attrs=prefer-standby", "target_session_attrs"},
		{"connect_timeout=-1", "connect_timeout"},
		{"host=a host=b", "host"},
		{"password='" + secret, "password"},
		{"host", ""},
		{"host=h password=hunter2 " + secret + "Tail", ""},
		{"host=h password=hunter2 " + secret + "=x", ""},
		{"password=hunter2 s3cr3tTail sslmode=require", ""},
		{"postgres://u:" + secret + "@h:notaport/db", ""},
		{"postgres://u:" + secret + "@h/db?sslmode=a&sslmode=b", "sslmode"},
		{"postgres://u:" + secret + "@h/db?bogus=1", "bogus"},
		{"postgres://u:" + secret + "@h/db?x=%zz", ""},
	}
	for _, tc := range cases {
		_, err := ParseDSN(tc.dsn)
		var de *DSNError
		if !errors.As(err, &de) {
			t.Errorf("%q: want *DSNError, got %v", tc.dsn, err)
			continue
		}
		if de.Key != tc.key {
			t.Errorf("%q: Key = %q, want %q (%v)", tc.dsn, de.Key, tc.key, err)
		}
		if strings.Contains(err.Error(), secret) {
			t.Errorf("%q: error leaks the password: %v", tc.dsn, err)
		}
		if de.Fix == "" {
			t.Errorf("%q: error gives no fix: %v", tc.dsn, err)
		}
	}
}

func FuzzParseDSN(f *testing.F) {
	for _, s := range []string{
		"", "host=h", "host='a b' port=5432", `password='x\'y'`, "postgres://u:p@h:1/d?sslmode=disable",
		"postgresql://[::1]:5432/db", "lakebase_endpoint=projects/p/branches/b/endpoints/e refresh=lazy",
		"=", "a=", "'", "postgres://%", "token_ttl=5m connect_timeout=3",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseDSN(s)
		if err != nil {
			var de *DSNError
			if !errors.As(err, &de) {
				t.Fatalf("error is %T, want *DSNError", err)
			}
			if pw := passwordOf(s); distinctive(pw) && strings.Contains(err.Error(), pw) {
				t.Fatalf("error %q contains the password", err)
			}
			return
		}
		if distinctive(d.Config.Password) && strings.Contains(d.String(), d.Config.Password) {
			t.Fatalf("String() contains the password")
		}
	})
}

// passwordOf extracts what a reader would see as the password in s, for the
// fuzz oracle: the text after "password=" or between ':' and '@' in a URL.
func passwordOf(s string) string {
	if i := strings.Index(s, "password="); i >= 0 {
		rest := s[i+len("password="):]
		if j := strings.IndexAny(rest, " \t"); j >= 0 {
			rest = rest[:j]
		}
		return strings.Trim(rest, "'")
	}
	if i := strings.Index(s, "://"); i >= 0 {
		rest := s[i+3:]
		if at := strings.Index(rest, "@"); at >= 0 {
			if c := strings.Index(rest[:at], ":"); c >= 0 {
				return rest[c+1 : at]
			}
		}
	}
	return ""
}

// distinctive reports whether pw could not plausibly occur in an error
// message by accident: long enough and containing a digit or upper-case
// letter, which the package's fixed messages never quote next to each other.
func distinctive(pw string) bool {
	if len(pw) < 6 {
		return false
	}
	return strings.ContainsAny(pw, "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ") && !strings.ContainsAny(pw, " =")
}

// TestDSNErrorsNeverQuoteAValue: no DSN error contains any word of any
// value; after an unquoted password it names nothing at all; a key that may
// be part of the value before it is not named either.
func TestDSNErrorsNeverQuoteAValue(t *testing.T) {
	cases := []struct {
		dsn     string
		key     string   // the Key the error may name
		secrets []string // words that must not appear
	}{
		{"password=Tr0ub4dor correcthorse=batterystaple", "", []string{"Tr0ub4dor", "correcthorse", "batterystaple"}},
		{"host=h password=Tr0ub4dor port=abc", "", []string{"Tr0ub4dor", "port", "abc"}},
		{"password=Tr0ub4dor host=a host=b", "", []string{"Tr0ub4dor", "host"}},
		{"password=Tr0ub4dor sslmode='unterminated", "", []string{"Tr0ub4dor", "sslmode", "unterminated"}},
		{"password='Tr0ub4dor horse' port=abc", "port", []string{"Tr0ub4dor", "horse", "abc"}},
		{"application_name=my lakebase_endpiont=projects/p", "", []string{"lakebase_endpiont", "projects/p"}},
		{"application_name='my app' lakebase_endpiont=x", "lakebase_endpiont", []string{"my app"}},
		{"postgres://h/db?password=Tr0ub&dor=x", "", []string{"Tr0ub", "dor"}},
		{"postgres://h/db?password=Tr0ub&port=1&port=2", "", []string{"Tr0ub", "port"}},
		{"postgres://u:Tr0ub4dor@h/db?bogus=1", "bogus", []string{"Tr0ub4dor"}},
	}
	for _, tc := range cases {
		_, err := ParseDSN(tc.dsn)
		var de *DSNError
		if !errors.As(err, &de) {
			t.Errorf("%q: want *DSNError, got %v", tc.dsn, err)
			continue
		}
		if de.Key != tc.key {
			t.Errorf("%q: Key = %q, want %q (%v)", tc.dsn, de.Key, tc.key, err)
		}
		msg := err.Error()
		for _, s := range tc.secrets {
			if strings.Contains(msg, s) {
				t.Errorf("%q: the error contains %q: %v", tc.dsn, s, err)
			}
		}
	}
	// A typo after an unquoted value is not named, but the fix suggests the key.
	_, err := ParseDSN("host=h lakebase_endpiont=x")
	if err == nil || !strings.Contains(err.Error(), `did you mean "lakebase_endpoint"?`) {
		t.Errorf("no suggestion: %v", err)
	}
}
