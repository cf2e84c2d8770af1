"""Generic preference loaders: JSONL, Parquet and Hugging Face datasets with configurable field names.

The bad-record policy, the JSONL reader and the skip reasons they count are in common.py, shared
with the HH-RLHF loader; `--format hf` on HH-shaped rows reuses hh_rlhf.split_transcripts.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable, Iterator
from pathlib import Path
from urllib.parse import urlparse

from frft_ray.config import FieldNames
from frft_ray.data.common import (
    PROGRESS_MIN_BYTES,
    BadRecordPolicy,
    OnBadRecord,
    RecordRejected,
    check_file,
    check_pair,
    iter_json_lines,
    progress_bar,
    record_stem,
    text_field,
)
from frft_ray.data.hh_rlhf import split_transcripts
from frft_ray.data.records import BadRecordError, LoadReport, PreferencePair


class DatasetUnavailableError(FileNotFoundError):
    """A dataset named for `load_dataset` cannot be fetched (offline, no network, not cached).

    A FileNotFoundError so the CLI reports it as a clean one-line error with exit code 2.
    """


def pair_from_row(row: dict, fields: FieldNames, default_id: str, default_source: str) -> PreferencePair:
    """One row with configurable field names -> a PreferencePair, or RecordRejected naming what is wrong."""
    prompt = text_field(row, fields.prompt)
    chosen = text_field(row, fields.chosen)
    rejected = text_field(row, fields.rejected)
    check_pair(prompt, chosen, rejected)
    rid = row.get(fields.id) if fields.id else None
    source = row.get(fields.source) if fields.source else None
    return PreferencePair(
        id=default_id if rid is None else str(rid),
        prompt=prompt,
        chosen=chosen,
        rejected=rejected,
        source=default_source if source is None else str(source),
    )


def _rows_to_pairs(
    rows: Iterable[tuple[int, dict]],
    fields: FieldNames,
    stem: str,
    source: str,
    policy: BadRecordPolicy,
    unit: str = "",
) -> Iterator[PreferencePair]:
    """Numbered rows -> pairs with ids '<stem>:<n>'; `unit` labels n in errors ('' for lines, 'row ')."""
    for n, row in rows:
        try:
            pair = pair_from_row(row, fields, f"{stem}:{n}", source)
        except RecordRejected as err:
            policy.reject(f"{unit}{n}", err)
            continue
        policy.report.records += 1
        yield pair


def iter_jsonl(
    path: str | Path,
    fields: FieldNames = FieldNames(),
    on_bad_record: OnBadRecord = "error",
    report: LoadReport | None = None,
    progress: bool = False,
) -> Iterator[PreferencePair]:
    """Stream pairs from a .jsonl/.jsonl.gz file of objects; ids default to '<stem>:<line>'."""
    p = check_file(path)
    policy = BadRecordPolicy(path, on_bad_record, report if report is not None else LoadReport(str(path)))
    stem = record_stem(p)
    yield from _rows_to_pairs(iter_json_lines(p, policy, progress), fields, stem, stem, policy)


def iter_parquet(
    path: str | Path,
    fields: FieldNames = FieldNames(),
    on_bad_record: OnBadRecord = "error",
    report: LoadReport | None = None,
    progress: bool = False,
    batch_size: int = 8192,
) -> Iterator[PreferencePair]:
    """Stream pairs from a Parquet file in record batches; ids default to '<stem>:<row>' (1-based rows).

    A required column missing from the schema is a broken file, not a bad record: always an error.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = check_file(path)
    policy = BadRecordPolicy(path, on_bad_record, report if report is not None else LoadReport(str(path)))
    try:
        pf = pq.ParquetFile(p)
    except (pa.ArrowException, OSError) as e:  # not Parquet at all (a jsonl file?), empty or truncated
        raise BadRecordError(f"{path}: not a readable Parquet file ({e}); is data.format (--format) right?") from None
    names = pf.schema_arrow.names
    missing = [c for c in (fields.prompt, fields.chosen, fields.rejected) if c not in names]
    if missing:
        raise BadRecordError(
            f"{path}: column(s) {missing} not found; columns are {names}. "
            "Set data.fields.prompt/chosen/rejected (or --prompt-field etc.) to the right names."
        )
    wanted = [fields.prompt, fields.chosen, fields.rejected]
    wanted += [c for c in (fields.id, fields.source) if c and c in names and c not in wanted]
    show = progress and p.stat().st_size >= PROGRESS_MIN_BYTES

    def rows() -> Iterator[tuple[int, dict]]:
        n = 0
        with progress_bar(pf.metadata.num_rows, p.name, show, unit="rows") as bar:
            for batch in pf.iter_batches(batch_size=batch_size, columns=wanted):
                for row in batch.to_pylist():
                    n += 1
                    yield n, row
                bar.update(batch.num_rows)

    stem = record_stem(p)
    yield from _rows_to_pairs(rows(), fields, stem, stem, policy, unit="row ")


def _hub_reachable(timeout_s: float = 3.0) -> tuple[bool, str]:
    """One TCP connect to the hub (or the HTTPS proxy) so no network fails in seconds, not ~25 s of retries."""
    from huggingface_hub import constants

    proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy")
    url = urlparse(proxy or constants.ENDPOINT)
    host, port = url.hostname or "", url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
        return True, ""
    except OSError as e:
        return False, f"cannot connect to {host}:{port} ({e})"


def _unavailable(name: str, why: str) -> DatasetUnavailableError:
    return DatasetUnavailableError(
        f"dataset {name!r} could not be fetched offline ({why}). Download it where the network allows "
        "(it is then cached), or export it to a local file and use data.format=jsonl|parquet|hh-rlhf "
        "with data.path=<file>."
    )


def load_hf_dataset(name: str, split: str = "train"):
    """`datasets.load_dataset(name, split=split)`, failing in seconds with a clear message when offline."""
    from huggingface_hub import constants

    if not Path(name).expanduser().exists() and not constants.HF_HUB_OFFLINE:
        ok, why = _hub_reachable()
        if not ok:
            raise _unavailable(name, f"the Hugging Face Hub is unreachable: {why}")
    import datasets

    try:
        return datasets.load_dataset(name, split=split)
    except ConnectionError as e:  # offline mode and not in the local cache
        why = f"offline mode is on (HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE) and it is not in the local cache: {e}"
        raise _unavailable(name, why) from None
    except FileNotFoundError as e:  # includes datasets.exceptions.DatasetNotFoundError
        raise DatasetUnavailableError(f"dataset {name!r} not found: {e}") from None
    except (ValueError, datasets.exceptions.DatasetGenerationError) as e:  # files `datasets` cannot parse
        raise BadRecordError(
            f"datasets.load_dataset({name!r}, split={split!r}) failed: {type(e).__name__}: {e}. For a messy "
            "JSONL file use data.format=jsonl or hh-rlhf, which skip and count bad lines."
        ) from None


def iter_hf(
    name: str,
    split: str = "train",
    fields: FieldNames = FieldNames(),
    on_bad_record: OnBadRecord = "error",
    report: LoadReport | None = None,
    progress: bool = False,
) -> Iterator[PreferencePair]:
    """Pairs from a Hugging Face dataset; ids default to '<name>:<split>:<row>' (1-based rows).

    When the prompt column is absent but `chosen`/`rejected` are there (Anthropic/hh-rlhf on the Hub),
    the rows are parsed as HH transcripts, with the same checks as the HH-RLHF file loader.
    """
    policy = BadRecordPolicy(name, on_bad_record, report if report is not None else LoadReport(name))
    ds = load_hf_dataset(name, split)
    columns = list(ds.column_names)
    hh_shaped = fields.prompt not in columns and {fields.chosen, fields.rejected} <= set(columns)
    missing = [c for c in (fields.prompt, fields.chosen, fields.rejected) if c not in columns]
    if missing and not hh_shaped:
        raise BadRecordError(f"dataset {name!r} split {split!r}: column(s) {missing} not found; columns are {columns}")
    stem = f"{Path(name).name}:{split}"

    def rows() -> Iterator[tuple[int, dict]]:
        for n, row in enumerate(ds, start=1):
            if hh_shaped:
                row = dict(row)
                try:
                    c, r = text_field(row, fields.chosen), text_field(row, fields.rejected)
                    row[fields.prompt], row[fields.chosen], row[fields.rejected] = split_transcripts(c, r)
                except RecordRejected as err:
                    policy.reject(f"row {n}", err)
                    continue
            yield n, row

    yield from _rows_to_pairs(rows(), fields, stem, Path(name).name, policy, unit="row ")

