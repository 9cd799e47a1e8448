package tokensource_test

import (
	"errors"
	"io/fs"
	"strings"
	"testing"

	"github.com/lakebase-go/lakebase/tokensource"
)

// TestConfigErrorUnwraps: a ConfigError shows and unwraps its cause, like
// connector's.
func TestConfigErrorUnwraps(t *testing.T) {
	err := error(&tokensource.ConfigError{Setting: "endpoint", Problem: "cannot be read", Fix: "check it", Err: fs.ErrNotExist})
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("errors.Is does not reach the cause: %v", err)
	}
	if msg := err.Error(); !strings.Contains(msg, "file does not exist") || !strings.HasSuffix(msg, "(fix: check it)") {
		t.Errorf("message %q", msg)
	}
	if tokensource.IsTransient(err) {
		t.Error("a configuration error is not transient")
	}
}
