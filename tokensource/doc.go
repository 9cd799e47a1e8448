// Package tokensource caches and refreshes the short-lived OAuth tokens that
// Databricks Lakebase accepts as Postgres passwords.
//
// A FetchFunc mints one token (EndpointFetcher and InstanceFetcher call the
// workspace API through the Databricks SDK). New wraps it in a Cached source
// with this policy:
//
//   - The token is refreshed at expiry − max(EarlyRefresh, lifetime/4): a
//     1-hour token after 45 minutes, leaving 15 minutes to ride out an
//     outage.
//   - Eager mode (the default) fetches at once and refreshes in the
//     background; Lazy mode starts nothing until a caller needs a token.
//   - A caller never waits while a valid token is cached, and never gets a
//     token expiring within SafetyMargin. A failed refresh keeps the last
//     good token.
//   - One fetch is in flight at a time; every waiter can give up with its
//     own context without cancelling the fetch for the others.
//   - Only transient failures (network, timeouts, 429, 5xx) are retried: a
//     waiting caller on a short bounded schedule, the background with
//     jittered exponential backoff that never goes below a floor. Permanent
//     failures (4xx, configuration, unusable responses) fail fast and are
//     remembered for the backoff period, so many callers cause no storm.
//   - Every attempt has its own timeout.
//   - Close stops everything; later calls fail with ErrClosed.
//
// Expiry maths use wall-clock time, so a host that slept past a token's
// expiry refreshes before handing out the expired token.
//
// Which mode: Eager keeps a token ready, so no connection ever waits for a
// fetch while a valid token is cached. Lazy starts no goroutine and no
// timer: the first caller after the refresh point fetches, and falls back
// to the still-valid old token if that fetch fails. Choose Lazy on
// CPU-throttled or scale-to-zero hosts, for short jobs, and for many rarely
// used sources (package peruser uses it for every user's pool).
//
// ToOAuth2 and FromOAuth2 adapt to and from golang.org/x/oauth2, and Static
// wraps a fixed token.
//
// Defaults: a zero Options field means its documented default (the
// Default* constants) and a negative duration means off, or is a
// *ConfigError from every Token call where off makes no sense
// (BackgroundRetryMin and BackgroundRetryMax).
//
// Each fetch attempt emits an OpenTelemetry span named "lakebase.token.fetch"
// and records the "lakebase.token.fetch.duration" histogram (and the
// "lakebase.token.fetch.failures" counter with error.type on failure).
// Nothing this package logs, returns or records contains a token.
package tokensource
