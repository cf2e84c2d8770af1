"""Truncated and corrupted preference files (hypothesis): the HH-RLHF and generic JSONL loaders never
crash with an unexpected exception. With on_bad_record=skip every line is kept or counted as skipped;
otherwise the only error is BadRecordError naming the file (and the line, for a bad record).
"""

import gzip
import json
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from frft_ray.config import FieldNames
from frft_ray.data.generic import iter_jsonl
from frft_ray.data.hh_rlhf import iter_hh_rlhf
from frft_ray.data.records import BadRecordError, LoadReport

FUZZ = settings(max_examples=80, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture])
FIELDS = FieldNames(prompt="question", chosen="better", rejected="worse", id="uid", source="origin")
# fragments that have broken JSON readers: deep nesting, a 5000-digit integer, non-finite literals,
# a lone surrogate, a BOM, NUL, an unterminated string
HOSTILE = [b"[" * 5000, b"1" * 5000, b"NaN", b"-Infinity", b'"\\ud800"', b"\xef\xbb\xbf", b"\x00", b'"abc',
           b"\xff\xfe", b"\n", b"{}", b"null", b"1e999"]


def _hh_lines(n: int = 30) -> bytes:
    rng = random.Random(0)
    out = []
    for i in range(n):
        turns = range(rng.randint(0, 2))  # earlier turns, shared by both transcripts
        ctx = "".join(f"\n\nHuman: question {i}.{t} about pets?\n\nAssistant: answer {t}." for t in turns)
        ctx += f"\n\nHuman: what about {i}?\n\nAssistant:"
        out.append({"chosen": ctx + f" a kind reply {i}", "rejected": ctx + f" a rude reply {i}"})
    return "".join(json.dumps(r) + "\n" for r in out).encode()


def _generic_lines(n: int = 30) -> bytes:
    rows = [{"uid": i if i % 3 else f"r{i}", "question": f"Q{i}: capital of place {i}?", "better": f"city {i}",
             "worse": f"town {i}", "origin": "geo"} for i in range(n)]
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


@st.composite
def corrupted(draw, clean: bytes) -> bytes:
    """`clean` truncated, with bytes overwritten, and hostile fragments spliced in."""
    data = bytearray(clean[: draw(st.integers(0, len(clean)))] if draw(st.booleans()) else clean)
    for _ in range(draw(st.integers(0, 6))):
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        if draw(st.booleans()):
            data[at] = draw(st.integers(0, 255))
        else:
            data[at:at] = draw(st.sampled_from(HOSTILE))
    return bytes(data)


def _lines_in(data: bytes) -> int:
    return data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)


def _load(kind: str, path, on_bad_record: str) -> LoadReport:
    report = LoadReport(str(path))
    if kind == "hh":
        list(iter_hh_rlhf(path, on_bad_record, report))
    else:
        list(iter_jsonl(path, FIELDS, on_bad_record, report))
    return report


CLEAN = {"hh": _hh_lines(), "generic": _generic_lines()}


@pytest.mark.parametrize("kind", CLEAN)
@pytest.mark.parametrize("gz", [False, True], ids=["jsonl", "jsonl.gz"])
@FUZZ
@given(data=st.data())
def test_corrupted_lines_are_kept_or_counted(tmp_path, kind, gz, data):
    raw = data.draw(corrupted(CLEAN[kind]))
    path = tmp_path / f"prefs.jsonl{'.gz' if gz else ''}"
    path.write_bytes(gzip.compress(raw, mtime=0) if gz else raw)
    report = _load(kind, path, "skip")
    assert report.records + sum(report.skipped.values()) == _lines_in(raw), report
    try:
        strict = _load(kind, path, "error")
    except BadRecordError as e:
        assert str(e).startswith(f"{path}:") and "on_bad_record" in str(e)  # file:line: reason
    else:
        assert strict.records == report.records and set(strict.skipped) <= {"blank_line"}


@pytest.mark.parametrize("kind", CLEAN)
@FUZZ
@given(data=st.data())
def test_a_corrupted_archive_is_refused_naming_the_file(tmp_path, kind, data):
    """Damage to the compressed bytes: the lines read before the damage are counted, then the whole
    file is refused with BadRecordError naming it (or, if the damage is harmless, it loads)."""
    archive = data.draw(corrupted(gzip.compress(CLEAN[kind], mtime=0)))
    path = tmp_path / "prefs.jsonl.gz"
    path.write_bytes(archive)
    try:
        report = _load(kind, path, "skip")
    except BadRecordError as e:
        assert str(e).startswith(f"{path}:") and "compressed" in str(e)
    else:
        assert report.records + sum(report.skipped.values()) > 0 or not archive
