"""One entry point for preference data: `load_preferences(cfg.data)` whatever the format.

The pipeline calls this; the `data stats` command calls `iter_preferences` to stream without
holding 160k pairs in memory.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import islice

from frft_ray.config import DataConfig
from frft_ray.data.records import LoadReport, PreferencePair


def _counted(pairs: list[PreferencePair], report: LoadReport) -> Iterator[PreferencePair]:
    for pair in pairs:
        report.records += 1
        yield pair


def iter_preferences(data: DataConfig, report: LoadReport, progress: bool = False) -> Iterator[PreferencePair]:
    """Stream the pairs `data` describes (all of them; `load_preferences` applies max_records)."""
    if data.format == "benchmark":
        from frft_ray.data.benchmark import make_benchmark  # lazy: another module, heavy to build

        return _counted(make_benchmark(data.benchmark).pool, report)
    if data.format == "hh-rlhf":
        from frft_ray.data.hh_rlhf import iter_hh_rlhf

        return iter_hh_rlhf(data.path, data.on_bad_record, report, progress)
    from frft_ray.data import generic

    if data.format == "jsonl":
        return generic.iter_jsonl(data.path, data.fields, data.on_bad_record, report, progress)
    if data.format == "parquet":
        return generic.iter_parquet(data.path, data.fields, data.on_bad_record, report, progress)
    if data.format == "hf":
        return generic.iter_hf(data.path, data.split, data.fields, data.on_bad_record, report, progress)
    raise ValueError(f"unknown data.format {data.format!r}")  # the config schema prevents this


def load_preferences(data: DataConfig, progress: bool = False) -> tuple[list[PreferencePair], LoadReport]:
    """All pairs (or the first `data.max_records` good ones) and what was kept/skipped, by reason."""
    report = LoadReport(path=data.path or data.format)
    pairs = list(islice(iter_preferences(data, report, progress), data.max_records))
    return pairs, report
