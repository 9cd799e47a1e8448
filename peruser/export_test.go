package peruser

import "github.com/lakebase-go/lakebase/internal/clock"

// WithClock returns cfg running on c (the janitor, token and verification
// expiry), for this package's tests: Config has no exported clock.
func WithClock(cfg Config, c clock.Clock) Config {
	cfg.clock = c
	return cfg
}
