package tokensource

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"time"
)

// Token is one Lakebase credential: the OAuth token used as the Postgres
// password and the moment it stops being accepted at login.
//
// Formatting a Token with fmt (any verb), logging it with log/slog or
// encoding it with encoding/json never prints Value.
type Token struct {
	// Value is the secret: the Postgres password for one login.
	Value string
	// Expiry is when the server stops accepting Value at login. Zero:
	// never expires (static passwords).
	Expiry time.Time
}

// Valid reports whether t is non-empty and still valid margin after now.
func (t Token) Valid(now time.Time, margin time.Duration) bool {
	if t.Value == "" {
		return false
	}
	return t.Expiry.IsZero() || now.Add(margin).Before(t.Expiry)
}

// String returns a redacted description of t.
func (t Token) String() string {
	if t.Value == "" {
		return "Token{empty}"
	}
	if t.Expiry.IsZero() {
		return "Token{REDACTED, no expiry}"
	}
	return "Token{REDACTED, expiry: " + t.Expiry.UTC().Format(time.RFC3339) + "}"
}

// GoString returns the redacted description for %#v.
func (t Token) GoString() string { return t.String() }

// Format implements fmt.Formatter so that every verb prints the redacted
// description.
func (t Token) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(t.String())) }

// MarshalJSON encodes t without Value: {"present":true,"expiry":"..."}
// (expiry omitted when zero). A Token marshalled this way cannot be
// unmarshalled back into a usable token; encode Value explicitly where a
// program really means to store the secret.
func (t Token) MarshalJSON() ([]byte, error) {
	var exp *time.Time
	if !t.Expiry.IsZero() {
		e := t.Expiry.UTC()
		exp = &e
	}
	return json.Marshal(struct {
		Present bool       `json:"present"`
		Expiry  *time.Time `json:"expiry,omitempty"`
	}{t.Value != "", exp})
}

// LogValue implements slog.LogValuer: only the expiry is logged.
func (t Token) LogValue() slog.Value {
	return slog.GroupValue(slog.Bool("present", t.Value != ""), slog.Time("expiry", t.Expiry))
}

// Source supplies tokens. Implementations must be safe for concurrent use by
// multiple goroutines; Token may block until a token is available or ctx is
// done.
type Source interface {
	Token(ctx context.Context) (Token, error)
}

// Refresher is implemented by sources that can be told a token was rejected.
// Refresh returns a token other than stale: if the cached token is no
// longer stale (someone refreshed already) it is returned at once,
// otherwise a new one is fetched, sharing any fetch already in flight.
type Refresher interface {
	Refresh(ctx context.Context, stale Token) (Token, error)
}

// FetchFunc mints one token with one network call (no caching, no retry).
// It must honour ctx.
type FetchFunc func(ctx context.Context) (Token, error)

// Mode selects how a Cached source refreshes.
type Mode int

const (
	// Eager fetches when the source is created and refreshes in the
	// background ahead of expiry. Callers never wait while a valid token
	// is cached. The default.
	Eager Mode = iota
	// Lazy fetches on demand and starts no background goroutine or timer:
	// nothing runs between calls. The first caller past the refresh point
	// waits for the fetch (one attempt, at most AttemptTimeout, or until
	// its ctx is done); if it fails while the old token is still valid, that
	// caller gets the old token. Concurrent callers get the old token
	// without waiting. The fetch itself runs in a goroutine that lives only
	// as long as the fetch, so that a waiter giving up does not cancel it
	// for the others.
	Lazy
)

// String returns "eager" or "lazy".
func (m Mode) String() string {
	switch m {
	case Eager:
		return "eager"
	case Lazy:
		return "lazy"
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

// ParseMode parses "eager" or "lazy" ("" is eager).
func ParseMode(s string) (Mode, error) {
	switch s {
	case "", "eager":
		return Eager, nil
	case "lazy":
		return Lazy, nil
	}
	return 0, &ConfigError{Setting: "refresh mode", Problem: fmt.Sprintf("unknown mode %q", s), Fix: `use "eager" or "lazy"`}
}
