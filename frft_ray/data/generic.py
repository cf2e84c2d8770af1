"""Generic preference loaders: JSONL, Parquet and Hugging Face datasets with configurable field names.

Also home of what every loader shares: the bad-record policy (`RecordRejected`, `BadRecordPolicy`) and
the byte-level JSONL reader, so the HH-RLHF loader and this one count quirks under the same names.

Stable skip reasons (keys of `LoadReport.skipped`):
    blank_line          an empty or whitespace-only line; never an error, always just counted
    invalid_utf8        the line's bytes are not UTF-8 (each line is decoded on its own)
    invalid_json        the line is not valid JSON
    not_an_object       the line is valid JSON but not an object
    missing_field       a required field is absent or null
    non_string_field    a required field is present but not a string
    empty_prompt        the prompt is empty or whitespace
    empty_response      chosen or rejected is empty or whitespace
    identical_pair      chosen and rejected are the same text
HH-RLHF adds: no_assistant_turn, diverging_transcripts, ends_with_human_turn (see hh_rlhf.py).
"""

from __future__ import annotations

import gzip
import os
import socket
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

from frft_ray.config import FieldNames
from frft_ray.data.records import BadRecordError, LoadReport, PreferencePair

OnBadRecord = Literal["error", "skip"]
PROGRESS_MIN_BYTES = 4 << 20  # files smaller than this load in well under a second: no bar


class RecordRejected(Exception):
    """Raised inside a loader for one bad record; the policy turns it into an error or a count."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(reason)
        self.reason = reason
        self.detail = detail


class DatasetUnavailableError(FileNotFoundError):
    """A dataset named for `load_dataset` cannot be fetched (offline, no network, not cached).

    A FileNotFoundError so the CLI reports it as a clean one-line error with exit code 2.
    """


class BadRecordPolicy:
    """Applies `on_bad_record`: 'error' raises BadRecordError naming file, line and reason; 'skip' counts."""

    def __init__(self, path: str | Path, on_bad_record: OnBadRecord, report: LoadReport):
        if on_bad_record not in ("error", "skip"):
            raise ValueError(f"on_bad_record must be 'error' or 'skip', got {on_bad_record!r}")
        self.path = str(path)
        self.on_bad_record = on_bad_record
        self.report = report

    def reject(self, where: str, err: RecordRejected) -> None:
        if self.on_bad_record == "error" and err.reason != "blank_line":
            detail = f": {err.detail}" if err.detail else ""
            raise BadRecordError(
                f"{self.path}:{where}: {err.reason}{detail} (set data.on_bad_record=skip, or "
                "--on-bad-record skip, to skip and count such records)"
            )
        self.report.skip(err.reason)


def check_file(path: str | Path) -> Path:
    """A clear error for a missing path or a directory, before any parsing starts."""
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"data file not found: {path}")
    if not p.is_file():
        raise FileNotFoundError(f"data path is not a file: {path}")
    return p


def record_stem(path: str | Path) -> str:
    """'train.jsonl.gz' -> 'train': the prefix of record ids ('<stem>:<line>')."""
    name = Path(path).name
    for suffix in (".gz", ".jsonl", ".json", ".parquet"):
        if name.endswith(suffix) and len(name) > len(suffix):
            name = name[: -len(suffix)]
    return name


def progress_bar(total: int, desc: str, show: bool, unit: str = "B"):
    """A tqdm bar on stderr (stdout stays clean for --json); TQDM_DISABLE=1 still silences it.

    We pass disable=True to hide it, never disable=False to force it, so tqdm's env overrides win.
    """
    from tqdm.auto import tqdm

    if not show:
        return tqdm(total=total, disable=True)
    return tqdm(total=total, desc=desc, unit=unit, unit_scale=True, mininterval=0.5)


def iter_json_lines(path: Path, policy: BadRecordPolicy, progress: bool = False) -> Iterator[tuple[int, dict]]:
    """Yield (line number, object) for each good line of a .jsonl or .jsonl.gz file, streaming.

    Reads bytes and decodes per line, so one bad byte costs one record, not the whole file.
    Line-level quirks (blank, invalid UTF-8 or JSON, not an object) go to `policy`.
    """
    import json

    size = path.stat().st_size
    with open(path, "rb") as raw, progress_bar(size, path.name, progress and size >= PROGRESS_MIN_BYTES) as bar:
        stream = gzip.GzipFile(fileobj=raw, mode="rb") if path.name.endswith(".gz") else raw
        lineno = 0
        try:
            for lineno, line in enumerate(stream, start=1):
                if lineno % 4096 == 0:
                    bar.update(raw.tell() - bar.n)
                try:
                    if not line.strip():
                        raise RecordRejected("blank_line")
                    try:
                        text = line.decode("utf-8-sig" if lineno == 1 else "utf-8")  # tolerate a BOM
                    except UnicodeDecodeError as e:
                        raise RecordRejected("invalid_utf8", f"byte {e.start}: {e.reason}") from None
                    try:
                        obj = json.loads(text)
                    except json.JSONDecodeError as e:
                        raise RecordRejected("invalid_json", e.msg + f" at column {e.colno}") from None
                    if not isinstance(obj, dict):
                        raise RecordRejected("not_an_object", f"got a JSON {type(obj).__name__}")
                except RecordRejected as err:
                    policy.reject(f"{lineno}", err)
                    continue
                yield lineno, obj
        except (EOFError, gzip.BadGzipFile, zlib.error) as e:
            # A truncated or corrupt archive is a broken file, not a bad record: always an error.
            raise BadRecordError(f"{path}: compressed data is corrupt after line {lineno}: {e}") from None
        bar.update(size - bar.n)


def text_field(row: dict, name: str) -> str:
    """The named field as a string, or RecordRejected (missing_field / non_string_field)."""
    value = row.get(name)
    if value is None:
        raise RecordRejected("missing_field", f"field {name!r} is missing or null")
    if not isinstance(value, str):
        raise RecordRejected("non_string_field", f"field {name!r} is a {type(value).__name__}, not a string")
    return value


def check_pair(prompt: str, chosen: str, rejected: str) -> None:
    """The content checks every format shares."""
    if not prompt.strip():
        raise RecordRejected("empty_prompt")
    if not chosen.strip() or not rejected.strip():
        raise RecordRejected("empty_response", f"{'chosen' if not chosen.strip() else 'rejected'} is empty")
    if chosen == rejected:
        raise RecordRejected("identical_pair", "chosen and rejected are the same text")


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
    import pyarrow.parquet as pq

    p = check_file(path)
    policy = BadRecordPolicy(path, on_bad_record, report if report is not None else LoadReport(str(path)))
    pf = pq.ParquetFile(p)
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
    from frft_ray.data.hh_rlhf import split_transcripts

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

