package tokensource_test

import (
	"context"
	"errors"
	"io/fs"
	"strings"
	"testing"
	"time"

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

// TestOptionsConvention: zero is the default, negative is off, and a
// negative setting that cannot mean off is a configuration error from
// Token, never a hammering loop.
func TestOptionsConvention(t *testing.T) {
	fetch := func(context.Context) (tokensource.Token, error) {
		return tokensource.Token{Value: "tok", Expiry: time.Now().Add(time.Minute)}, nil
	}
	// A token with 10 s left is inside the default 30 s safety margin: it
	// is handed out only with the margin off.
	short := func(context.Context) (tokensource.Token, error) {
		return tokensource.Token{Value: "short", Expiry: time.Now().Add(10 * time.Second)}, nil
	}
	def := tokensource.New(short, tokensource.Options{Mode: tokensource.Lazy, RetrySchedule: []time.Duration{}})
	defer def.Close()
	if _, err := def.Token(t.Context()); err == nil {
		t.Error("default SafetyMargin (30 s) handed out a token with 10 s left")
	}
	off := tokensource.New(short, tokensource.Options{Mode: tokensource.Lazy, SafetyMargin: -1, EarlyRefresh: -1, AttemptTimeout: -1})
	defer off.Close()
	if tok, err := off.Token(t.Context()); err != nil || tok.Value != "short" {
		t.Errorf("SafetyMargin off: %v %v", tok.Value, err)
	}
	for _, o := range []tokensource.Options{
		{Mode: tokensource.Lazy, BackgroundRetryMin: -time.Second},
		{Mode: tokensource.Lazy, BackgroundRetryMax: -time.Second},
		{Mode: tokensource.Lazy, RetrySchedule: []time.Duration{-time.Millisecond}},
		{Mode: tokensource.Mode(7)},
	} {
		c := tokensource.New(fetch, o)
		_, err := c.Token(t.Context())
		c.Close()
		var ce *tokensource.ConfigError
		if !errors.As(err, &ce) || !strings.HasPrefix(ce.Setting, "Options.") || tokensource.IsTransient(err) {
			t.Errorf("%+v: want a *ConfigError naming the option, got %v", o, err)
		}
	}
}
