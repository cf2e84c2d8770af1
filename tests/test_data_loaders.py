"""Preference loaders: HH-RLHF quirks counted by reason, generic JSONL/Parquet fields, HF offline errors."""

from __future__ import annotations

import gzip
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from frft_ray.config import DataConfig, FieldNames
from frft_ray.data.generic import iter_jsonl, iter_parquet
from frft_ray.data.hh_rlhf import load_hh_rlhf, split_transcripts
from frft_ray.data.loading import load_preferences
from frft_ray.data.records import BadRecordError, LoadReport

FIXTURES = Path(__file__).parent / "fixtures"
HH = FIXTURES / "hh_quirks.jsonl"
GENERIC = FIXTURES / "generic_custom.jsonl"
REPO = Path(__file__).resolve().parent.parent

# What every line of hh_quirks.jsonl is, by 1-based line number (None = a good record).
HH_LINES = {
    1: None, 2: None, 3: "blank_line", 4: "identical_pair", 5: "diverging_transcripts", 6: "empty_response",
    7: "invalid_json", 8: "missing_field", 9: "non_string_field", 10: "invalid_utf8", 11: "no_assistant_turn",
    12: "blank_line", 13: "not_an_object", 14: "ends_with_human_turn", 15: None, 16: None, 17: "missing_field",
}
HH_SKIPPED = {
    "blank_line": 2, "identical_pair": 1, "diverging_transcripts": 1, "empty_response": 1, "invalid_json": 1,
    "missing_field": 2, "non_string_field": 1, "invalid_utf8": 1, "no_assistant_turn": 1, "not_an_object": 1,
    "ends_with_human_turn": 1,
}
CUSTOM = FieldNames(prompt="question", chosen="better", rejected="worse", id="uid", source="origin")


def test_hh_fixture_skip_counts_every_quirk_by_reason():
    pairs, report = load_hh_rlhf(HH, on_bad_record="skip")
    assert report.records == 4 and len(pairs) == 4
    assert report.skipped == HH_SKIPPED
    assert [p.id for p in pairs] == ["hh_quirks:1", "hh_quirks:2", "hh_quirks:15", "hh_quirks:16"]
    assert {p.source for p in pairs} == {"hh-rlhf"}
    assert pairs[2].chosen == " Bien sûr ☕." and pairs[3].chosen == " Yes, CRLF."  # UTF-8 and CRLF lines are fine


def test_hh_multi_turn_record_is_split_exactly():
    pair = load_hh_rlhf(HH, on_bad_record="skip")[0][0]
    assert pair.prompt == (
        "\n\nHuman: What is a good name for a cat?\n\nAssistant: Maybe Whiskers."
        "\n\nHuman: Something shorter?\n\nAssistant:"
    )
    assert pair.chosen == " How about Tom? It is short and classic."
    assert pair.rejected == " I don't know."


def test_hh_gzip_variant_gives_the_same_pairs(tmp_path):
    gz = tmp_path / "hh_quirks.jsonl.gz"
    gz.write_bytes(gzip.compress(HH.read_bytes()))
    plain_pairs, plain_report = load_hh_rlhf(HH, on_bad_record="skip")
    gz_pairs, gz_report = load_hh_rlhf(gz, on_bad_record="skip")
    assert gz_pairs == plain_pairs  # same ids too: the stem drops .jsonl.gz
    assert gz_report.skipped == plain_report.skipped


@pytest.mark.parametrize("line", [n for n, reason in HH_LINES.items() if reason not in (None, "blank_line")])
def test_hh_error_mode_names_file_line_and_reason(tmp_path, line):
    lines = HH.read_bytes().split(b"\n")
    path = tmp_path / "one_bad.jsonl"
    path.write_bytes(lines[0] + b"\n" + lines[line - 1] + b"\n")  # a good line, then the bad one as line 2
    with pytest.raises(BadRecordError) as exc:
        load_hh_rlhf(path, on_bad_record="error")
    assert f"{path}:2: {HH_LINES[line]}" in str(exc.value)


def test_hh_error_mode_counts_blank_lines_instead_of_failing(tmp_path):
    path = tmp_path / "blanks.jsonl"
    good = HH.read_bytes().split(b"\n")[0]
    path.write_bytes(b"\n" + good + b"\n\n  \n")
    pairs, report = load_hh_rlhf(path, on_bad_record="error")
    assert len(pairs) == 1 and pairs[0].id == "blanks:2"
    assert report.skipped == {"blank_line": 3}


def test_utf8_byte_order_mark_on_first_line_is_tolerated(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + HH.read_bytes().split(b"\n")[0] + b"\n")
    pairs, report = load_hh_rlhf(path)
    assert len(pairs) == 1 and report.skipped == {}


def test_truncated_gzip_is_an_error_even_when_skipping(tmp_path):
    data = gzip.compress(HH.read_bytes() * 50)
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(BadRecordError, match="compressed data is corrupt"):
        load_hh_rlhf(path, on_bad_record="skip")


def test_missing_file_is_a_clear_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="data file not found"):
        load_hh_rlhf(tmp_path / "nope.jsonl")


def test_split_transcripts_keeps_leading_space_and_shared_prompt():
    prompt, c, r = split_transcripts("\n\nHuman: a\n\nAssistant:  two spaces", "\n\nHuman: a\n\nAssistant: one")
    assert (prompt, c, r) == ("\n\nHuman: a\n\nAssistant:", "  two spaces", " one")


def test_load_preferences_dispatches_and_honours_max_records():
    data = DataConfig(format="hh-rlhf", path=str(HH), on_bad_record="skip", max_records=2)
    pairs, report = load_preferences(data)
    assert [p.id for p in pairs] == ["hh_quirks:1", "hh_quirks:2"]
    assert report.records == 2


def test_generic_jsonl_custom_field_names():
    report = LoadReport(str(GENERIC))
    pairs = list(iter_jsonl(GENERIC, CUSTOM, "skip", report))
    assert [(p.id, p.prompt, p.chosen, p.rejected, p.source) for p in pairs] == [
        ("a1", "Capital of France?", "Paris.", "Lyon.", "geo"),
        ("a2", "2+2?", "4", "5", "math"),
        ("a7", "Colour of the sky?", "Blue.", "Green.", "nature"),
    ]
    assert report.records == 3
    assert report.skipped == {"identical_pair": 1, "missing_field": 1, "non_string_field": 1, "empty_response": 1}


def test_generic_jsonl_default_ids_and_error_mode():
    fields = FieldNames(prompt="question", chosen="better", rejected="worse")
    pairs, _ = load_preferences(DataConfig(format="jsonl", path=str(GENERIC), fields=fields, on_bad_record="skip"))
    assert [p.id for p in pairs] == ["generic_custom:1", "generic_custom:2", "generic_custom:7"]
    assert {p.source for p in pairs} == {"generic_custom"}
    with pytest.raises(BadRecordError, match=r"generic_custom.jsonl:3: identical_pair"):
        load_preferences(DataConfig(format="jsonl", path=str(GENERIC), fields=fields))
    with pytest.raises(BadRecordError, match=r"generic_custom.jsonl:1: missing_field: field 'prompt'"):
        load_preferences(DataConfig(format="jsonl", path=str(GENERIC)))  # default field names do not match


def _write_parquet(path: Path) -> None:
    rows = [json.loads(line) for line in GENERIC.read_text().splitlines()]
    rows = [r for r in rows if not isinstance(r.get("better"), int)]  # Arrow columns have one type
    pq.write_table(pa.Table.from_pylist(rows), path)


def test_parquet_custom_field_names(tmp_path):
    path = tmp_path / "prefs.parquet"
    _write_parquet(path)
    data = DataConfig(format="parquet", path=str(path), fields=CUSTOM, on_bad_record="skip")
    pairs, report = load_preferences(data)
    assert [(p.id, p.chosen, p.source) for p in pairs] == [
        ("a1", "Paris.", "geo"), ("a2", "4", "math"), ("a7", "Blue.", "nature")
    ]
    assert report.skipped == {"identical_pair": 1, "missing_field": 1, "empty_response": 1}  # null 'worse' is missing
    with pytest.raises(BadRecordError, match=r"prefs.parquet:row 3: identical_pair"):
        list(iter_parquet(path, CUSTOM, "error"))


def test_parquet_missing_column_names_the_columns(tmp_path):
    path = tmp_path / "prefs.parquet"
    _write_parquet(path)
    with pytest.raises(BadRecordError, match=r"\['prompt', 'chosen', 'rejected'\] not found; columns are"):
        load_preferences(DataConfig(format="parquet", path=str(path), on_bad_record="skip"))


def _hf_load_in_subprocess(
    tmp_path: Path, env_changes: dict[str, str | None],
) -> tuple[subprocess.CompletedProcess, float]:
    """A fresh interpreter: huggingface_hub reads HF_HUB_OFFLINE / HF_ENDPOINT once, at import."""
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf_home")}
    for k, v in env_changes.items():
        env.pop(k, None) if v is None else env.__setitem__(k, v)
    code = (
        "from frft_ray.config import DataConfig\n"
        "from frft_ray.data.loading import load_preferences\n"
        "load_preferences(DataConfig(format='hf', path='Anthropic/hh-rlhf'))\n"
    )
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
    return proc, time.monotonic() - start


def test_hf_dataset_offline_fails_fast_and_clearly(tmp_path):
    proc, _ = _hf_load_in_subprocess(tmp_path, {"HF_HUB_OFFLINE": "1"})
    assert proc.returncode != 0
    assert "DatasetUnavailableError" in proc.stderr
    assert "'Anthropic/hh-rlhf' could not be fetched offline" in proc.stderr and "local file" in proc.stderr


def test_hf_dataset_unreachable_hub_fails_fast_and_clearly(tmp_path):
    with socket.socket() as s:  # a loopback port nobody listens on: connection refused at once
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    online = {"HF_HUB_OFFLINE": None, "TRANSFORMERS_OFFLINE": None, "HTTPS_PROXY": None, "https_proxy": None}
    proc, _ = _hf_load_in_subprocess(tmp_path, {**online, "HF_ENDPOINT": f"http://127.0.0.1:{port}"})
    assert proc.returncode != 0
    assert "could not be fetched offline" in proc.stderr and "the Hugging Face Hub is unreachable" in proc.stderr
    # (Without the connect probe, huggingface_hub sleeps 1+2+4+8+8 = 23 s in retries before failing;
    # tests assert no wall-clock times, so the speed is measured, not asserted.)


def test_benchmark_format_uses_the_benchmark_pool():
    benchmark = pytest.importorskip("frft_ray.data.benchmark", reason="benchmark module not written yet")
    from frft_ray.config import BenchmarkConfig

    cfg = BenchmarkConfig(pool_size=40, sft_size=10, eval_prompts=5)
    pairs, report = load_preferences(DataConfig(format="benchmark", benchmark=cfg, max_records=25))
    assert len(pairs) == 25 and report.records == 25
    assert pairs == benchmark.make_benchmark(cfg).pool[:25]
