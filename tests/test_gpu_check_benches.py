"""The benchmarks that scripts/gpu_check.sh runs on a GPU node (gpu_bench, filter_bench, sampler_bench),
and rm_fit_precision, at toy size on the CPU: a GPU node is lent for minutes, so these must not meet
their first bug there. Each runs the script's own `main` with the arguments a user would pass, and
checks what it prints or writes."""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import filter_bench  # noqa: E402
import gpu_bench  # noqa: E402
import rm_fit_precision  # noqa: E402
import sampler_bench  # noqa: E402


def test_gpu_bench_runs_every_phase_on_cpu_and_writes_its_json(tmp_path, one_torch_thread):
    out = tmp_path / "bench.json"
    rc = gpu_bench.main(["--device", "cpu", "--shape", "tiny", "--prompt", "16", "--response", "8",
                         "--rollout-batch", "4", "--rollout-prompts", "8", "--ppo-batch", "8", "--ppo-minibatch", "4",
                         "--ppo-micro", "2", "0", "--ppo-steps", "1", "--bt-batch", "4", "--bt-steps", "2",
                         "--embed-texts", "32", "--json", str(out)])
    assert rc == 0
    got = json.loads(out.read_text())
    assert got["failed"] == [] and got["device"] == "cpu"
    res = got["results"]
    assert set(res) == {"matmul", "rollout4", "ppo_micro2", "ppo_micro4", "bt", "embed"}, res
    assert res["matmul"]["tflops"] > 0
    assert res["rollout4"]["ours_tok_s"] > 0 and res["rollout4"]["plain_lp_tok_s"] > 0
    assert all(res[k]["step_s"] > 0 for k in ("ppo_micro2", "ppo_micro4"))
    assert res["ppo_micro4"]["micro"] == 4  # micro 0 = the whole minibatch
    assert res["bt"]["pairs_s"] > 0 and res["embed"]["fp32_sent_s"] > 0


def test_filter_bench_selects_as_its_cases_say(capsys, one_torch_thread):
    filter_bench.main(["--n", "2000", "--g", "64", "--repeats", "1"])
    rows = {m[0]: int(m[1]) for m in re.findall(r"^\| (typical|partial|worst) \| [-0-9.]+ \| (\d+) \|", capsys.readouterr().out,
                                                re.M)}
    assert set(rows) == {"typical", "partial", "worst"}, rows
    assert rows["typical"] > rows["partial"] > 0  # every generation passes vs half of them
    assert rows["worst"] == 0  # nothing passes 0.8 among random 384-d vectors


def test_sampler_bench_times_both_samplers_at_both_vocabularies(capsys, one_torch_thread):
    sampler_bench.main(["--rounds", "1", "--batch", "4", "--new-tokens", "4", "--threads", "1"])
    ratios = re.findall(r"vocab +(\d+): multinomial [0-9.]+ s, inverse CDF [0-9.]+ s per rollout: ([0-9.]+)x",
                        capsys.readouterr().out)
    assert [v for v, _ in ratios] == ["2048", "50257"]
    assert all(float(r) > 0 for _, r in ratios)


def test_rm_fit_precision_fits_in_each_mode(capsys, one_torch_thread):
    rm_fit_precision.main(["--shape", "tiny", "--batch", "2", "--length", "16", "--steps", "2"])  # CUDA where there is one
    rows = re.findall(r"^(\S+) +(?:cpu|cuda:\d+)/(fp32|bf16) +([0-9.]+) pairs/s .* final loss ([-0-9.na]+)$",
                      capsys.readouterr().out, re.M)
    assert [(mode, dtype) for mode, dtype, _, _ in rows] == [("fp32", "fp32"), ("bf16", "bf16"), ("bf16+ckpt", "bf16")]
    assert all(float(rate) > 0 and math.isfinite(float(loss)) for _, _, rate, loss in rows)
