package bench

import (
	"fmt"
	"math"
	"sort"
	"time"
)

// Estimate is the median of a sample with a distribution-free 95 %
// confidence interval for it (the order-statistic interval benchstat
// uses: the ranks come from the Binomial(n, ½) distribution, so nothing is
// assumed about the shape of the data).
type Estimate struct {
	Median, Lo, Hi float64
	N              int
	// Exact is false when n is too small (below 6) for a 95 % interval;
	// Lo and Hi are then the sample's minimum and maximum.
	Exact bool
}

// MedianCI returns the median of xs and its 95 % confidence interval.
func MedianCI(xs []float64) Estimate {
	n := len(xs)
	if n == 0 {
		return Estimate{}
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	var med float64
	if n%2 == 1 {
		med = s[n/2]
	} else {
		med = (s[n/2-1] + s[n/2]) / 2
	}
	k, ok := medianRank(n, 0.95)
	if !ok {
		return Estimate{Median: med, Lo: s[0], Hi: s[n-1], N: n}
	}
	return Estimate{Median: med, Lo: s[k], Hi: s[n-1-k], N: n, Exact: true}
}

// medianRank returns the largest 0-based rank k such that the interval
// [x(k), x(n-1-k)] of the sorted sample covers the median with probability
// at least conf. With B ~ Binomial(n, ½) the number of observations at or
// below the median, x(k) lies above it iff B ≤ k, so k is the largest rank
// with P(B ≤ k) ≤ (1-conf)/2 (and likewise at the top).
func medianRank(n int, conf float64) (int, bool) {
	alpha := (1 - conf) / 2
	// P(B ≤ j), accumulated in log space so large n does not underflow.
	lnHalf := float64(n) * math.Log(0.5)
	lgN, _ := math.Lgamma(float64(n + 1))
	cdf := 0.0
	k := -1
	for j := 0; j < n/2; j++ {
		lgJ, _ := math.Lgamma(float64(j + 1))
		lgNJ, _ := math.Lgamma(float64(n - j + 1))
		cdf += math.Exp(lgN - lgJ - lgNJ + lnHalf)
		if cdf > alpha {
			break
		}
		k = j // x(j) > median iff B ≤ j: that has probability ≤ alpha
	}
	if k < 0 {
		return 0, false
	}
	return k, true
}

// Contains reports whether v lies in the interval.
func (e Estimate) Contains(v float64) bool { return e.Lo <= v && v <= e.Hi }

// Overlaps reports whether two intervals share a point.
func (e Estimate) Overlaps(o Estimate) bool { return e.Lo <= o.Hi && o.Lo <= e.Hi }

// HalfWidth is the larger distance from the median to an end of the
// interval, relative to the median (0.03 = ±3 %).
func (e Estimate) HalfWidth() float64 {
	if e.Median == 0 {
		return math.Inf(1)
	}
	return math.Max(e.Hi-e.Median, e.Median-e.Lo) / math.Abs(e.Median)
}

// Ratio formats e as a ratio: "1.01 [0.99–1.03]".
func (e Estimate) Ratio() string {
	if e.N == 0 {
		return ""
	}
	s := fmt.Sprintf("%.2f [%.2f–%.2f]", e.Median, e.Lo, e.Hi)
	if !e.Exact {
		s += " (min–max: n < 6)"
	}
	return s
}

// Verdict says whether the ratio e is distinguishable from 1.
func (e Estimate) Verdict() string {
	switch {
	case e.N == 0:
		return ""
	case e.Contains(1):
		return "within noise"
	case e.Hi < 1:
		return "faster"
	default:
		return "slower"
	}
}

// Durations formats e, a sample of durations in nanoseconds:
// "10.5ms [10.4ms–10.6ms]".
func (e Estimate) Durations(round time.Duration) string {
	if e.N == 0 {
		return ""
	}
	d := func(f float64) string { return time.Duration(f).Round(round).String() }
	return fmt.Sprintf("%s [%s–%s]", d(e.Median), d(e.Lo), d(e.Hi))
}

// ratios returns a[i]/b[i] for each pair.
func ratios(a, b []time.Duration) []float64 {
	out := make([]float64, 0, len(a))
	for i := range a {
		if i < len(b) && b[i] > 0 {
			out = append(out, float64(a[i])/float64(b[i]))
		}
	}
	return out
}

// floats converts durations to nanoseconds, divided by per (operations
// per sample).
func floats(ds []time.Duration, per int) []float64 {
	out := make([]float64, len(ds))
	for i, d := range ds {
		out[i] = float64(d) / float64(max(per, 1))
	}
	return out
}
