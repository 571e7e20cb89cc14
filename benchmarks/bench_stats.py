"""Statistics for the benchmark: medians, percentiles and interleaved A/B sampling.

Every figure pywsl is judged by is a ratio against a baseline measured in the same run, the two
sampled alternately (pywsl, baseline, pywsl, ...) so that a noisy neighbour slows both, and
summarised by the median after warm-up runs that are thrown away.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

__all__ = ["Samples", "interleave", "median", "percentile", "ratio"]


def median(values: Sequence[float]) -> float:
    """The middle value (the mean of the two middle ones for an even count)."""
    if not values:
        raise ValueError("median of no values")
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) / 2


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0 <= q <= 100), linear between the closest ranks (numpy's default)."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} is outside 0..100")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def ratio(numerator: float, denominator: float) -> float:
    """numerator / denominator; infinite when the denominator is not positive."""
    return numerator / denominator if denominator > 0 else math.inf


@dataclass
class Samples:
    """The kept measurements of one side of a comparison."""

    values: list[float] = field(default_factory=list)

    def add(self, value: float) -> None:
        self.values.append(value)

    @property
    def median(self) -> float:
        return median(self.values)

    def percentile(self, q: float) -> float:
        return percentile(self.values, q)

    def summary(self) -> dict[str, float | int]:
        return {
            "n": len(self.values),
            "median": self.median,
            "min": min(self.values),
            "max": max(self.values),
        }


def interleave(
    first: Callable[[], float],
    second: Callable[[], float],
    *,
    repetitions: int,
    warmups: int,
) -> tuple[Samples, Samples]:
    """Run ``first`` and ``second`` alternately; ``warmups`` rounds are discarded.

    Each callable returns one measurement (and does any untimed preparation itself). The order
    alternates per round (AB, BA, AB, ...) so a systematic "second call is faster" effect does not
    favour one side.
    """
    if repetitions < 1 or warmups < 0:
        raise ValueError("need at least one repetition and no negative warm-up count")
    kept_first, kept_second = Samples(), Samples()
    for round_number in range(warmups + repetitions):
        pair = ((first, kept_first), (second, kept_second))
        for measure, kept in pair if round_number % 2 == 0 else pair[::-1]:
            value = measure()
            if round_number >= warmups:
                kept.add(value)
    return kept_first, kept_second
