//go:build race

package main

// raceBuild: the test binary runs with -race, so the command is built with
// -race too and reuses the race-instrumented build cache of the test's
// dependencies instead of compiling them all again.
const raceBuild = true
