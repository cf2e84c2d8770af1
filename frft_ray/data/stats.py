"""Length statistics of a preference set, computed while streaming (only lengths are kept).

Used by `frft-ray data stats` to size `models.max_prompt_tokens` / `max_length` before a run and to
see what a loader skipped, by reason.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from frft_ray.data.records import LoadReport, PreferencePair

FIELDS = ("prompt", "chosen", "rejected")


def summarize(values: list[int]) -> dict[str, float | int | None]:
    """mean, p50, p95, max of a list of lengths; all None when it is empty."""
    if not values:
        return {"mean": None, "p50": None, "p95": None, "max": None}
    arr = np.asarray(values, dtype=np.int64)
    return {
        "mean": round(float(arr.mean()), 2),
        "p50": round(float(np.percentile(arr, 50)), 2),
        "p95": round(float(np.percentile(arr, 95)), 2),
        "max": int(arr.max()),
    }


def compute_stats(pairs: Iterable[PreferencePair], report: LoadReport) -> dict:
    """Consume `pairs` and return {"records", "skipped", "skipped_total", "lengths"} as plain JSON types.

    `lengths[field]["chars" | "words"]` summarizes len(text) and len(text.split()) (whitespace words).
    """
    chars: dict[str, list[int]] = {f: [] for f in FIELDS}
    words: dict[str, list[int]] = {f: [] for f in FIELDS}
    records = 0
    for pair in pairs:
        records += 1
        for f in FIELDS:
            text = getattr(pair, f)
            chars[f].append(len(text))
            words[f].append(len(text.split()))
    return {
        "path": report.path,
        "records": records,
        "skipped": dict(sorted(report.skipped.items())),
        "skipped_total": sum(report.skipped.values()),
        "lengths": {f: {"chars": summarize(chars[f]), "words": summarize(words[f])} for f in FIELDS},
    }


def _fmt(v: float | int | None) -> str:
    if v is None:
        return "-"
    return f"{v:,.1f}" if isinstance(v, float) else f"{v:,}"


def format_stats(stats: dict) -> str:
    """A human-readable table of `compute_stats` output."""
    lines = [f"{stats['path']}", f"records kept: {stats['records']:,}", f"records skipped: {stats['skipped_total']:,}"]
    for reason, n in stats["skipped"].items():
        lines.append(f"  {reason:<24}{n:>10,}")
    lines.append("")
    lines.append(f"{'length':<18}{'mean':>10}{'p50':>10}{'p95':>10}{'max':>10}")
    for f in FIELDS:
        for unit in ("chars", "words"):
            s = stats["lengths"][f][unit]
            lines.append(f"{f + ' ' + unit:<18}" + "".join(f"{_fmt(s[k]):>10}" for k in ("mean", "p50", "p95", "max")))
    return "\n".join(lines)
