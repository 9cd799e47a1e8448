package reliability

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	sdkconfig "github.com/databricks/databricks-sdk-go/config"

	"github.com/lakebase-go/lakebase/connector"
	"github.com/lakebase-go/lakebase/driver"
	"github.com/lakebase-go/lakebase/lakebasetest"
	"github.com/lakebase-go/lakebase/peruser"
	"github.com/lakebase-go/lakebase/tokensource"
)

// plantSecret is the recognisable secret planted in every field that can
// hold a token, password or user access token.
const plantSecret = "Zq9PLANTEDsecretQ7x"

// secretField names the fields that hold secrets (Token.Value by its type).
var secretField = regexp.MustCompile(`(?i)password|secret|token|credential`)

// secretCarrier is an error value whose fields hold a secret its message
// does not show (as a driver error holds the connection's config): a type
// that prints its Err field by reflection would leak it.
type secretCarrier struct{ Password string }

func (e secretCarrier) Error() string { return "carrier error" }

// plant fills, by reflection, every exported field of v that can carry a
// secret: string fields named like one (and Token.Value), error fields
// (with a secretCarrier), token sources, workspace clients and SDK settings
// (with a PAT, an OAuth secret and a password).
func plant(v reflect.Value) {
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		f, sf := v.Field(i), t.Field(i)
		if !sf.IsExported() {
			continue
		}
		switch {
		case f.Kind() == reflect.String && (secretField.MatchString(sf.Name) || t == reflect.TypeOf(tokensource.Token{}) && sf.Name == "Value"):
			f.SetString(plantSecret + "_" + sf.Name)
		case f.Kind() == reflect.String:
			f.SetString("plain-" + strings.ToLower(sf.Name))
		case f.Type() == reflect.TypeOf((*error)(nil)).Elem():
			f.Set(reflect.ValueOf(secretCarrier{Password: plantSecret + "_carried"}))
		case f.Type() == reflect.TypeOf((*tokensource.Source)(nil)).Elem():
			f.Set(reflect.ValueOf(tokensource.Static(plantSecret+"_source", time.Time{})))
		case f.Type() == reflect.TypeOf(&sdkconfig.Config{}):
			f.Set(reflect.ValueOf(sdkSecrets()))
		case f.Type() == reflect.TypeOf(&connector.Workspace{}):
			f.Set(reflect.ValueOf(&connector.Workspace{Config: sdkSecrets()}))
		case f.Kind() == reflect.Struct:
			plant(f)
		}
	}
}

// sdkSecrets is SDK settings holding a PAT, an OAuth secret and a password.
func sdkSecrets() *sdkconfig.Config {
	return &sdkconfig.Config{Host: "https://w.example.com", Token: plantSecret + "_pat", ClientSecret: plantSecret + "_oauth", Password: plantSecret + "_basic"}
}

// planted returns a value of type T with secrets planted.
func planted[T any]() T {
	var x T
	plant(reflect.ValueOf(&x).Elem())
	return x
}

// holds reports whether v contains s anywhere, following unexported
// fields, pointers, interfaces, maps and slices: the proof that a sample
// really carries a secret (so the encoding checks can fail).
func holds(v reflect.Value, s string, seen map[uintptr]bool, depth int) bool {
	if depth > 12 || !v.IsValid() {
		return false
	}
	switch v.Kind() {
	case reflect.String:
		return strings.Contains(v.String(), s)
	case reflect.Pointer:
		if v.IsNil() || seen[v.Pointer()] {
			return false
		}
		seen[v.Pointer()] = true
		return holds(v.Elem(), s, seen, depth+1)
	case reflect.Interface:
		return holds(v.Elem(), s, seen, depth+1)
	case reflect.Struct:
		if t := v.Type(); t.PkgPath() == "sync/atomic" && strings.HasPrefix(t.Name(), "Pointer[") {
			// An atomic.Pointer[T]: its [0]*T field names T, its v field
			// points at one.
			elem := t.Field(0).Type.Elem().Elem()
			if p := v.FieldByName("v").UnsafePointer(); p != nil {
				return holds(reflect.NewAt(elem, p), s, seen, depth+1)
			}
			return false
		}
		for i := 0; i < v.NumField(); i++ {
			if holds(v.Field(i), s, seen, depth+1) {
				return true
			}
		}
	case reflect.Slice, reflect.Array:
		for i := 0; i < v.Len() && i < 64; i++ {
			if holds(v.Index(i), s, seen, depth+1) {
				return true
			}
		}
	case reflect.Map:
		it := v.MapRange()
		for it.Next() {
			if holds(it.Key(), s, seen, depth+1) || holds(it.Value(), s, seen, depth+1) {
				return true
			}
		}
	}
	return false
}

// encodings renders x every way a program or a library might print it.
func encodings(x any) map[string]string {
	out := map[string]string{}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d"} {
		out[verb] = fmt.Sprintf(verb, x)
		out["nested "+verb] = fmt.Sprintf(verb, struct{ Field any }{x})
		out["slice "+verb] = fmt.Sprintf(verb, []any{x})
	}
	if b, err := json.Marshal(x); err == nil {
		out["json"] = string(b)
	}
	if b, err := json.Marshal(struct{ Field any }{x}); err == nil {
		out["nested json"] = string(b)
	}
	var text, js bytes.Buffer
	slog.New(slog.NewTextHandler(&text, nil)).Info("m", "v", x, slog.Any("any", x), slog.Group("g", "v", x))
	slog.New(slog.NewJSONHandler(&js, nil)).Info("m", "v", x, slog.Any("any", x), slog.Group("g", "v", x))
	out["slog text"], out["slog json"] = text.String(), js.String()
	if s, ok := x.(fmt.Stringer); ok {
		out["String()"] = s.String()
	}
	if s, ok := x.(fmt.GoStringer); ok {
		out["GoString()"] = s.GoString()
	}
	if e, ok := x.(error); ok {
		out["Error()"] = e.Error()
	}
	return out
}

// leaked returns the encoding that shows a secret (as is, hex- or
// base64-encoded), if any.
func leaked(x any, secrets []string) (string, string) {
	for name, s := range encodings(x) {
		for _, sec := range secrets {
			for _, form := range []string{sec, hex.EncodeToString([]byte(sec)), strings.ToUpper(hex.EncodeToString([]byte(sec))), base64.StdEncoding.EncodeToString([]byte(sec))[:len(sec)]} {
				if strings.Contains(s, form) {
					return name, s
				}
			}
		}
	}
	return "", ""
}

// TestNoSecretInAnyEncoding walks every exported type that can hold a
// token, a password or a user access token — filled by reflection with
// recognisable secrets, and real ones built through the public API — and
// checks that none shows a secret under %v %+v %#v %s %q %x %X %d (alone,
// nested in a struct and in a slice), encoding/json, log/slog's text and
// JSON handlers, String(), GoString() and Error().
func TestNoSecretInAnyEncoding(t *testing.T) {
	e := lakebasetest.Start(t)
	samples := map[string]any{
		"tokensource.Token":        planted[tokensource.Token](),
		"*tokensource.Token":       ptr(planted[tokensource.Token]()),
		"peruser.Identity":         planted[peruser.Identity](),
		"*peruser.Identity":        ptr(planted[peruser.Identity]()),
		"connector.Config":         planted[connector.Config](),
		"*connector.Config":        ptr(planted[connector.Config]()),
		"driver.DSN":               planted[driver.DSN](),
		"*driver.DSN":              ptr(planted[driver.DSN]()),
		"*connector.LoginError":    ptr(planted[connector.LoginError]()),
		"*connector.ConfigError":   ptr(planted[connector.ConfigError]()),
		"*connector.WakeError":     ptr(planted[connector.WakeError]()),
		"*tokensource.Error":       ptr(planted[tokensource.Error]()),
		"*tokensource.ConfigError": ptr(planted[tokensource.ConfigError]()),
		"*driver.DSNError":         ptr(planted[driver.DSNError]()),
		"*peruser.AuthError":       ptr(planted[peruser.AuthError]()),
	}
	secrets := []string{plantSecret}

	// Real values built through the public API.
	quiet := slog.New(slog.DiscardHandler)
	noEnv := func(string) (string, bool) { return "", false }
	static, err := connector.New(t.Context(), connector.Config{Host: e.Host(), Port: e.Port(), User: "native", Password: plantSecret + "_static", SSLRootCert: e.CAFile(), Logger: quiet, LookupEnv: noEnv})
	if err != nil {
		t.Fatal(err)
	}
	defer static.Close()
	samples["*connector.Connector (Password)"] = static
	samples["connector.Connector.Config() (Password)"] = static.Config()

	minted, db := open(t, config(t, e, quiet))
	tok, err := minted.TokenSource().Token(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	secrets = append(secrets, tok.Value, e.ServicePrincipalToken()) // the workspace bearer token is in its WorkspaceConfig
	samples["*connector.Connector (minted token)"] = minted
	samples["tokensource.Source (the connector's cache)"] = minted.TokenSource()
	samples["minted tokensource.Token"] = tok
	samples["*sql.DB over the connector"] = db

	cached := tokensource.New(func(context.Context) (tokensource.Token, error) {
		return tokensource.Token{Value: plantSecret + "_cached", Expiry: time.Now().Add(time.Hour)}, nil
	}, tokensource.Options{Mode: tokensource.Lazy, Logger: quiet})
	defer cached.Close()
	if _, err := cached.Token(t.Context()); err != nil {
		t.Fatal(err)
	}
	samples["*tokensource.Cached"] = cached

	parsed, err := driver.ParseDSN("host=h user=u password='" + plantSecret + "_dsn' lakebase_endpoint=projects/p/branches/b/endpoints/e")
	if err != nil {
		t.Fatal(err)
	}
	samples["driver.ParseDSN result"] = parsed
	dsnDB, err := sql.Open(driver.Name, "host=h user=u sslmode=disable password="+plantSecret+"_open")
	if err != nil {
		t.Fatal(err)
	}
	defer dsnDB.Close()
	samples["*sql.DB from sql.Open(\"lakebase\")"] = dsnDB
	_, dsnErr := driver.ParseDSN("host=h password=" + plantSecret + "_typo correcthorse=batterystaple")
	samples["DSN error after an unquoted password"] = dsnErr

	// These hold no secret field at all (their messages are the check).
	noSecretField := map[string]bool{"*tokensource.ConfigError": true, "*driver.DSNError": true, "*peruser.AuthError": true, "DSN error after an unquoted password": true}
	for name, x := range samples {
		if !noSecretField[name] && !holds(reflect.ValueOf(x), plantSecret, map[uintptr]bool{}, 0) && !holds(reflect.ValueOf(x), tok.Value, map[uintptr]bool{}, 0) {
			t.Errorf("%s: the sample carries no secret: the check would prove nothing", name)
		}
		if enc, out := leaked(x, secrets); enc != "" {
			i := strings.Index(out, plantSecret)
			t.Errorf("%s leaks a secret under %s: %.300s", name, enc, out[max(0, i-100):])
		}
	}
	t.Logf("%d samples × %d encodings checked", len(samples), len(encodings(tok)))
}

func ptr[T any](v T) *T { return &v }
