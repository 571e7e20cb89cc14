"""The benchmark's report: one row per metric, its goal, and the table and JSON renderings.

A row holds pywsl's figure, the baseline measured in the same run (when the metric has one),
their ratio and the goal. A goal bounds either the ratio or the absolute figure; the verdict is
PASS, MISS, or ERROR when the metric could not be measured.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Literal

from bench_proc import shorten

__all__ = ["Goal", "Result", "format_value", "render_json", "render_table"]

Bound = Literal["max", "min"]
Subject = Literal["ratio", "value"]


def format_value(value: float | None, unit: str) -> str:
    """A figure for people: seconds become ms or s, everything else keeps its unit."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if math.isinf(value):
        return "inf"
    if unit == "s":
        if abs(value) < 1:
            return f"{value * 1000:.1f} ms"
        return f"{value:.2f} s"
    if unit == "x":
        return f"{value:.2f}x"
    if unit in ("MiB/s", "MB"):
        return f"{value:.1f} {unit}"
    return f"{value:g} {unit}".rstrip()


@dataclass(frozen=True)
class Goal:
    """``subject`` (the ratio or the absolute value) must be at most / at least ``limit``."""

    bound: Bound
    subject: Subject
    limit: float
    unit: str = ""
    text: str = ""  # overrides the generated description

    def describe(self) -> str:
        if self.text:
            return self.text
        sign = "<=" if self.bound == "max" else ">="
        if self.subject == "ratio":
            return f"{sign} {self.limit:g}x"
        return f"{sign} {self.limit:g} {self.unit}".rstrip()

    def met_by(self, value: float | None, ratio: float | None) -> bool | None:
        """True/False, or None when the figure the goal needs is missing."""
        figure = ratio if self.subject == "ratio" else value
        if figure is None or math.isnan(figure):
            return None
        return figure <= self.limit if self.bound == "max" else figure >= self.limit


@dataclass
class Result:
    """One metric's outcome."""

    key: str
    title: str
    unit: str
    value: float | None = None
    baseline: float | None = None
    baseline_label: str = ""
    ratio: float | None = None
    goal: Goal | None = None
    passed: bool | None = None  # set by the metric when its verdict needs more than the goal
    error: str | None = None
    note: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    def verdict(self) -> str:
        if self.error is not None:
            return "ERROR"
        passed = self.passed
        if passed is None and self.goal is not None:
            passed = self.goal.met_by(self.value, self.ratio)
        if passed is None:
            return "info" if self.goal is None else "-"
        return "PASS" if passed else "MISS"

    def as_dict(self) -> dict[str, Any]:
        return {
            "metric": self.key,
            "title": self.title,
            "unit": self.unit,
            "pywsl": _finite(self.value),
            "baseline": _finite(self.baseline),
            "baseline_label": self.baseline_label,
            "ratio": _finite(self.ratio),
            "goal": self.goal.describe() if self.goal else None,
            "result": self.verdict(),
            "error": self.error,
            "note": self.note,
            "details": self.details,
        }


def _finite(value: float | None) -> float | None:
    if value is None or math.isnan(value) or math.isinf(value):
        return None
    return value


HEADERS = ("metric", "pywsl", "baseline", "ratio", "goal", "result")


def _row(result: Result) -> tuple[str, ...]:
    if result.error is not None:
        return (result.title, "-", "-", "-", result.goal.describe() if result.goal else "-", "ERROR")
    baseline = format_value(result.baseline, result.unit) if result.baseline is not None else "-"
    if result.baseline is not None and result.baseline_label:
        baseline = f"{baseline} ({result.baseline_label})"
    return (
        result.title,
        format_value(result.value, result.unit),
        baseline,
        format_value(result.ratio, "x") if result.ratio is not None else "-",
        result.goal.describe() if result.goal else "-",
        result.verdict(),
    )


def render_table(results: list[Result]) -> str:
    """A plain-text table (and the notes and errors of its rows below it)."""
    rows = [HEADERS, *(_row(result) for result in results)]
    widths = [max(len(row[column]) for row in rows) for column in range(len(HEADERS))]
    numeric = {1, 2, 3}

    def line(row: tuple[str, ...]) -> str:
        cells = [
            cell.rjust(widths[i]) if i in numeric and row is not HEADERS else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ]
        return "  ".join(cells).rstrip()

    out = [line(HEADERS), "  ".join("-" * width for width in widths)]
    out.extend(line(row) for row in rows[1:])
    remarks = [f"  {result.title}: {shorten(result.error)}" for result in results if result.error is not None]
    remarks += [
        f"  {result.title}: {result.note}" for result in results if result.note and result.error is None
    ]
    if remarks:
        out.append("")
        out.extend(remarks)
    return "\n".join(out)


def render_json(results: list[Result], context: dict[str, Any]) -> str:
    """One line of JSON: the run's context and every row."""
    return json.dumps(
        {"context": context, "results": [result.as_dict() for result in results]}, sort_keys=True
    )
