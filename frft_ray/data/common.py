"""What every preference loader shares: the bad-record policy, file checks and the JSONL reader.

The HH-RLHF loader (hh_rlhf.py) and the generic loaders (generic.py) both build on this module, so
they count quirks under the same names and neither imports the other's internals.

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
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from frft_ray.data.records import BadRecordError, LoadReport
from frft_ray.faults import first_line

OnBadRecord = Literal["error", "skip"]
PROGRESS_MIN_BYTES = 4 << 20  # files smaller than this load in well under a second: no bar


class RecordRejected(Exception):
    """Raised inside a loader for one bad record; the policy turns it into an error or a count."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(reason)
        self.reason = reason
        self.detail = detail


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
                    except (ValueError, RecursionError) as e:  # an integer over 4300 digits; nesting too deep
                        raise RecordRejected("invalid_json", first_line(e)) from None
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
        raise RecordRejected("non_string_field", f"field {name!r} is {type(value).__name__} {value!r:.40}, not a string")
    return value


def check_pair(prompt: str, chosen: str, rejected: str) -> None:
    """The content checks every format shares."""
    if not prompt.strip():
        raise RecordRejected("empty_prompt")
    if not chosen.strip() or not rejected.strip():
        raise RecordRejected("empty_response", f"{'chosen' if not chosen.strip() else 'rejected'} is empty")
    if chosen == rejected:
        raise RecordRejected("identical_pair", "chosen and rejected are the same text")
