//go:build !race

package peruser_test

const raceEnabled = false
