"""benchmarks/sft_head_bench.py and benchmarks/length_grouping_bench.py at toy size (micro config, a
sliver of an epoch): both paths run and print what the README quotes from them."""

from __future__ import annotations

import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import length_grouping_bench  # noqa: E402
import sft_head_bench  # noqa: E402


def test_sft_head_bench_gives_both_paths_the_same_loss(capsys, one_torch_thread):
    sft_head_bench.main(["--config", "micro", "--epochs", "0.2", "--rounds", "1", "--threads", "1"])
    out = capsys.readouterr().out
    losses = re.findall(r"head_only=(False|True) *: wall .* probe loss ([0-9.]+)", out)
    assert [h for h, _ in losses] == ["False", "True"], out
    assert losses[0][1] == losses[1][1], out  # the same function, to the printed digits
    assert re.search(r"head only / all positions: wall x[0-9.]+", out), out


def test_length_grouping_bench_pads_less_when_grouped(capsys, one_torch_thread):
    length_grouping_bench.main(["--config", "micro", "--seeds", "0", "--group", "4", "--threads", "1", "--pairs", "256",
                                "--set", "sft.epochs=0.2"])
    out = capsys.readouterr().out
    ratios = dict(re.findall(r"(SFT|RM) grouped/plain: padded tokens x([0-9.]+)", out))
    assert set(ratios) == {"SFT", "RM"}, out
    assert all(0 < float(r) < 1 for r in ratios.values()), out
    assert re.search(r"RM grouping +4: held-out accuracy 0\.\d+", out), out
