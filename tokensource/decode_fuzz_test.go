package tokensource

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/databricks/databricks-sdk-go/service/database"
	"github.com/databricks/databricks-sdk-go/service/postgres"
)

// FuzzCredentialResponse decodes arbitrary bodies the way the SDK does and
// validates them: never a panic, and either a usable token or a
// *ValidationError.
func FuzzCredentialResponse(f *testing.F) {
	for _, s := range []string{
		`{"token":"t","expire_time":"2099-01-01T00:00:00Z"}`,
		`{"token":"t","expiration_time":"2099-01-01T00:00:00.5Z"}`,
		`{"token":"","expire_time":"2099-01-01T00:00:00Z"}`,
		`{"token":"t"}`, `{"token":"t","expiration_time":"soon"}`, `{}`, `null`, `{"token":1}`, `{"token": "t`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var pc postgres.DatabaseCredential
		if json.Unmarshal(body, &pc) == nil {
			tok, err := parseEndpointCredential(&pc)
			check(t, tok, err)
		}
		var dc database.DatabaseCredential
		if json.Unmarshal(body, &dc) == nil {
			tok, err := parseInstanceCredential(&dc)
			check(t, tok, err)
		}
	})
}

func check(t *testing.T, tok Token, err error) {
	t.Helper()
	if err != nil {
		var ve *ValidationError
		if !errors.As(err, &ve) {
			t.Fatalf("error %T %v, want *ValidationError", err, err)
		}
		return
	}
	if tok.Value == "" || tok.Expiry.IsZero() {
		t.Fatalf("accepted an unusable token %v", tok)
	}
}
