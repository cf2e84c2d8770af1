"""`frft-ray data stats` through the real entry point, in a subprocess like a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).parent / "fixtures"
HH = FIXTURES / "hh_quirks.jsonl"
GENERIC = FIXTURES / "generic_custom.jsonl"
HH_SKIPPED = {
    "blank_line": 2, "diverging_transcripts": 1, "empty_response": 1, "ends_with_human_turn": 1, "identical_pair": 1,
    "invalid_json": 1, "invalid_utf8": 1, "missing_field": 2, "no_assistant_turn": 1, "non_string_field": 1,
    "not_an_object": 1,
}
CUSTOM_ARGS = ["--prompt-field", "question", "--chosen-field", "better", "--rejected-field", "worse"]


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "frft_ray.cli", "data", "stats", *args],
        cwd=REPO, env=env or dict(os.environ), capture_output=True, text=True, timeout=120,
    )


def test_stats_json_hh_counts_and_lengths():
    proc = run_cli(str(HH), "--format", "hh-rlhf", "--json")
    assert proc.returncode == 0, proc.stderr
    stats = json.loads(proc.stdout)  # the whole of stdout is one JSON object
    assert stats["records"] == 4
    assert stats["skipped"] == HH_SKIPPED and stats["skipped_total"] == 13
    # the four kept responses: " How about Tom? It is short and classic." is the longest chosen one
    assert stats["lengths"]["chosen"]["chars"]["max"] == len(" How about Tom? It is short and classic.")
    assert stats["lengths"]["chosen"]["words"]["max"] == 8
    assert stats["lengths"]["rejected"]["words"]["p50"] == 1.5  # words: 3, 2, 1, 1
    assert set(stats["lengths"]["prompt"]["chars"]) == {"mean", "p50", "p95", "max"}


def test_stats_text_output_lists_reasons():
    proc = run_cli(str(HH), "--format", "hh-rlhf")
    assert proc.returncode == 0, proc.stderr
    assert "records kept: 4" in proc.stdout and "records skipped: 13" in proc.stdout
    assert "ends_with_human_turn" in proc.stdout and "prompt chars" in proc.stdout


def test_stats_error_mode_stops_at_first_bad_line():
    proc = run_cli(str(HH), "--format", "hh-rlhf", "--json", "--on-bad-record", "error")
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert f"{HH}:4: identical_pair" in proc.stderr


def test_stats_missing_path_exits_2_with_message(tmp_path):
    proc = run_cli(str(tmp_path / "nope.jsonl"), "--format", "jsonl", "--json")
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert "frft-ray: error: data file not found:" in proc.stderr and "nope.jsonl" in proc.stderr


def test_stats_generic_jsonl_and_parquet_with_custom_fields(tmp_path):
    proc = run_cli(str(GENERIC), "--format", "jsonl", "--json", *CUSTOM_ARGS)
    assert proc.returncode == 0, proc.stderr
    stats = json.loads(proc.stdout)
    assert stats["records"] == 3
    assert stats["skipped"] == {"empty_response": 1, "identical_pair": 1, "missing_field": 1, "non_string_field": 1}

    rows = [json.loads(line) for line in GENERIC.read_text().splitlines()]
    path = tmp_path / "prefs.parquet"
    pq.write_table(pa.Table.from_pylist([r for r in rows if isinstance(r.get("better"), str)]), path)
    proc = run_cli(str(path), "--format", "parquet", "--json", *CUSTOM_ARGS)
    assert proc.returncode == 0, proc.stderr
    stats = json.loads(proc.stdout)
    assert stats["records"] == 3 and stats["skipped"] == {"empty_response": 1, "identical_pair": 1, "missing_field": 1}
    assert stats["lengths"]["prompt"]["chars"]["max"] == len("Colour of the sky?")


def test_stats_hf_local_dataset_in_hh_shape(tmp_path):
    """`--format hf` on a local dataset folder; chosen/rejected-only columns are parsed as HH transcripts."""
    lines = HH.read_text(encoding="utf-8", errors="replace").split("\n")
    folder = tmp_path / "hh_local"
    folder.mkdir()
    (folder / "train.jsonl").write_text("\n".join(lines[i - 1] for i in (1, 2, 4, 15)) + "\n", encoding="utf-8")
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf_home"), "HF_HUB_OFFLINE": "1"}
    proc = run_cli(str(folder), "--format", "hf", "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    stats = json.loads(proc.stdout)
    assert stats["records"] == 3 and stats["skipped"] == {"identical_pair": 1}


def test_stats_progress_goes_to_stderr_and_stdout_stays_json(tmp_path):
    good = HH.read_bytes().split(b"\n")[0] + b"\n"
    path = tmp_path / "big.jsonl"
    path.write_bytes(good * (5 * 2**20 // len(good) + 1))  # over the 4 MiB progress threshold
    env = {k: v for k, v in os.environ.items() if k != "TQDM_DISABLE"}
    proc = run_cli(str(path), "--format", "hh-rlhf", "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    n = len(path.read_bytes().splitlines())
    assert json.loads(proc.stdout)["records"] == n
    assert "big.jsonl" in proc.stderr and "100%" in proc.stderr


def test_data_benchmark_prints_label_agreement_per_pool_and_pooled(capsys):
    from frft_ray.cli import main

    args = ["data", "benchmark", "--annotators", "uniform", "--label-accuracy", "0.8", "--pool-size", "2000"]
    assert main([*args, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["annotators"] == "uniform" and out["pool"] == 2000 and sum(out["pool_by_source"].values()) == 2000
    assert abs(out["gold_agreement"] - 0.8) < 4 * (0.8 * 0.2 / (2000 - out["gold_ties"])) ** 0.5
    assert set(out["gold_agreement_by_pool"]) == {"concise@accurate", "verbose@length", "refusal@safety", "mixed@random"}
    assert main(args[:-2]) == 0  # text table
    text = capsys.readouterr().out
    assert "pooled" in text and "verbose@length" in text
    assert main(["data", "benchmark", "--label-accuracy", "0.3"]) == 2  # out of range: named, exit 2
    assert "data.benchmark.label_accuracy" in capsys.readouterr().err


def test_stats_on_the_wrong_format_says_so(tmp_path):
    """A jsonl file read as parquet is a one-line error naming the file; read as hh-rlhf every record
    is skipped, which prints the stats, warns and exits 1; a bad flag value is named by its flag."""
    proc = run_cli(str(GENERIC), "--format", "parquet", "--json", *CUSTOM_ARGS)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert f"{GENERIC}: not a readable Parquet file" in proc.stderr and "--format" in proc.stderr
    proc = run_cli(str(GENERIC), "--format", "hh-rlhf", "--json")
    assert proc.returncode == 1 and json.loads(proc.stdout)["records"] == 0
    assert "no record kept" in proc.stderr and "is --format hh-rlhf right" in proc.stderr
    proc = run_cli(str(GENERIC), "--format", "jsonl", "--max-records", "0")
    assert proc.returncode == 2 and "frft-ray: error: --max-records: " in proc.stderr, proc.stderr
