// Package reliability holds the fault, load and secret-leak tests of the
// whole library (issue "Reliability and security suite"). It has no
// non-test code besides this comment: every test runs the public packages
// against the lakebasetest emulator, the way a user meets them.
package reliability
