// Package sslmode turns a libpq sslmode and root-certificate setting into
// the *tls.Config a Lakebase connection uses, with the Lakebase policy:
//
//   - verify-full is the default;
//   - require, verify-ca and prefer are upgraded to verify-full (Lakebase
//     presents publicly trusted certificates, so nothing that worked before
//     breaks, and nothing unverified is accepted);
//   - allow and unknown values are errors that list the accepted values;
//   - disable is allowed (local servers) and logs a warning for hosts that
//     are not loopback;
//   - there is never a plaintext fallback: a TLS mode yields exactly one
//     TLS configuration and the connector sets no fallbacks;
//   - TLS 1.2 or newer; ServerName is the host, so DNS names are sent as SNI
//     while IP literals are verified against IP SANs without SNI;
//   - sslrootcert (a PEM file, or "system") replaces the system roots;
//     nothing is read from $HOME.
//
// The package never dials anything.
package sslmode
