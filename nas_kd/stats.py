"""Paired-seed comparisons (the mean per-seed difference and its Student-t confidence interval),
and the rank and order statistics the benches report (Spearman's coefficient, percentiles).

"A beats B" in nas-kd means: both trained on the same seeds (same data order and, for equal
architectures, the same initial weights), the per-seed differences a_i - b_i averaged, and a 95%
t-interval around that mean that excludes zero. The t quantile is computed here (regularised
incomplete beta by Lentz's continued fraction, then bisection) so that no SciPy is needed.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

__all__ = ["t_cdf", "t_quantile", "PairedDifference", "paired_difference", "ranks", "spearman", "percentile"]


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz, Numerical Recipes 6.4)."""
    tiny, eps = 1e-300, 3e-16
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < eps:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: int) -> float:
    """P(T <= t) for Student's t with ``df`` degrees of freedom."""
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def t_quantile(p: float, df: int) -> float:
    """The t value with P(T <= t) = p (bisection to 1e-12; p in (0, 1), df >= 1)."""
    if not 0.0 < p < 1.0 or df < 1:
        raise ValueError(f"t_quantile needs 0 < p < 1 and df >= 1, got p={p}, df={df}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12:
            break
    return 0.5 * (lo + hi)


@dataclass(frozen=True)
class PairedDifference:
    """a - b over paired seeds. ``low``/``high`` are None with a single pair (no interval)."""

    seeds: tuple[int, ...]
    differences: tuple[float, ...]
    mean: float
    low: float | None
    high: float | None
    confidence: float = 0.95

    @property
    def n(self) -> int:
        return len(self.differences)

    @property
    def direction(self) -> str:
        """"better", "worse", or "no detectable difference" (the interval holds zero, or n = 1)."""
        if self.low is None or self.high is None:
            return "no detectable difference"
        if self.low > 0:
            return "better"
        if self.high < 0:
            return "worse"
        return "no detectable difference"

    @classmethod
    def from_dict(cls, d: dict) -> PairedDifference:
        """The inverse of `to_dict` (its derived keys n and direction are recomputed)."""
        return cls(tuple(d["seeds"]), tuple(d["differences"]), d["mean"], d["low"], d["high"], d["confidence"])

    def to_dict(self) -> dict:
        return {"seeds": list(self.seeds), "differences": list(self.differences), "mean": self.mean, "low": self.low, "high": self.high, "confidence": self.confidence, "n": self.n, "direction": self.direction}


def paired_difference(a: dict[int, float], b: dict[int, float], confidence: float = 0.95) -> PairedDifference:
    """Per-seed ``a[s] - b[s]`` over the seeds both have, with a two-sided t-interval."""
    seeds = tuple(sorted(set(a) & set(b)))
    if not seeds:
        raise ValueError("paired_difference needs at least one seed in common")
    diffs = tuple(a[s] - b[s] for s in seeds)
    mean = statistics.fmean(diffs)
    if len(diffs) < 2:
        return PairedDifference(seeds, diffs, mean, None, None, confidence)
    half = t_quantile(0.5 + confidence / 2.0, len(diffs) - 1) * statistics.stdev(diffs) / math.sqrt(len(diffs))
    return PairedDifference(seeds, diffs, mean, mean - half, mean + half, confidence)


def ranks(values: list[float]) -> list[float]:
    """Average ranks (ties share the mean rank), for Spearman's coefficient."""
    order = sorted(range(len(values)), key=values.__getitem__)
    out = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            out[order[k]] = (i + j) / 2
        i = j + 1
    return out


def spearman(a: list[float], b: list[float]) -> float:
    """Spearman's rank correlation: Pearson's on the average ranks."""
    ra, rb = ranks(list(a)), ranks(list(b))
    ma, mb = statistics.fmean(ra), statistics.fmean(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb, strict=True))
    return cov / (sum((x - ma) ** 2 for x in ra) * sum((y - mb) ** 2 for y in rb)) ** 0.5


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (0 <= q <= 1), linear between order statistics (numpy's default)."""
    s = sorted(values)
    pos = q * (len(s) - 1)
    lo = int(pos)
    return s[lo] + (s[min(lo + 1, len(s) - 1)] - s[lo]) * (pos - lo)
