// Package clock is the wall clock of the token cache and the per-user
// manager, replaceable in this module's tests (internal/clocktest is the
// fake one). It is internal: users never need another clock, and the
// public packages keep it out of their API.
package clock

import "time"

// Clock tells wall-clock time and runs functions later.
type Clock interface {
	Now() time.Time
	AfterFunc(d time.Duration, f func()) Timer
}

// Timer is a pending AfterFunc call.
type Timer interface {
	// Stop prevents the call if it has not run; it reports whether it did.
	Stop() bool
}

type system struct{}

func (system) Now() time.Time                            { return time.Now() }
func (system) AfterFunc(d time.Duration, f func()) Timer { return time.AfterFunc(d, f) }

// System returns the real wall clock.
func System() Clock { return system{} }

// IsSystem reports whether c is the real wall clock.
func IsSystem(c Clock) bool { _, ok := c.(system); return ok }

// SetTokenOptions sets the clock of a *tokensource.Options (passed as any:
// this package cannot import tokensource, which registers the function in
// its init). Only this module's packages and tests call it.
var SetTokenOptions func(opts any, c Clock)
