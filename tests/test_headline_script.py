"""scripts/headline.py: the README's five-seed table, paired seed by seed across two grids' archives."""

import json
import runpy
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
headline = runpy.run_path(str(REPO / "scripts" / "headline.py"))


def _cell(archive: Path, grid: str, name: str, gold: dict, wins: dict) -> None:
    d = archive / grid / name
    d.mkdir(parents=True)
    summary = {"gold_reward": gold, "win_rate": {k: {"estimate": v} for k, v in wins.items()}}
    (d / "summary.json").write_text(json.dumps(summary))


def test_arms_of_one_seed_are_paired_across_the_two_grids(tmp_path):
    for seed, (sft, van, frft, init, rr, orc) in {0: (0.9, -1.8, 0.8, 1.0, -2.0, 1.9),
                                                   1: (1.0, -1.2, 1.1, 1.1, -2.5, 1.8)}.items():
        s = f"seed-{seed}+{seed}"
        _cell(tmp_path, "refit_from", f"annotators-adversarial__{s}__refit_from-current+vanilla+frft",
              {"sft": sft, "vanilla": van, "frft": frft}, {"frft_vs_sft": 0.4 + 0.1 * seed})
        _cell(tmp_path, "refit_from", f"annotators-adversarial__{s}__refit_from-initial+frft",
              {"sft": sft, "frft": init}, {"frft_vs_sft": 0.6})
        _cell(tmp_path, "baselines", f"annotators-adversarial+random_refit+oracle__{s}",
              {"sft": sft, "random_refit": rr, "oracle": orc}, {"oracle_vs_sft": 0.9})
        _cell(tmp_path, "random_share", f"share-0.25__{s}", {"sft": sft + 0.1, "frft": frft + 0.5}, {"frft_vs_sft": 0.7})
        _cell(tmp_path, "random_share", f"share-0.0__{s}", {"sft": sft + 0.1, "frft": frft + 0.2}, {"frft_vs_sft": 0.6})
    rows = headline["per_seed"](tmp_path)
    assert rows["adversarial"]["0+0"]["frft_initial"] == 1.0 and rows["adversarial"]["1+1"]["frft"] == 1.1
    assert rows["adversarial"]["0+0"]["frft_initial_vs_sft"] == 0.6 and rows["adversarial"]["1+1"]["frft_vs_sft"] == 0.5
    assert rows["uniform"] == {"0+0": {"oracle": 1.9, "oracle_vs_sft": 0.9}, "1+1": {"oracle": 1.8, "oracle_vs_sft": 0.9}}
    lines = headline["table"](rows)
    start = next(i for i, line in enumerate(lines) if line.startswith("Paired differences"))
    head, diffs = lines[start + 2].split(" | "), lines[start + 4].split(" | ")
    cols = dict(zip((h.strip(" |") for h in head), diffs))
    # per seed: frft - vanilla 2.6 and 2.3; frft_initial - frft 0.2 and 0.0; frft - random_refit 2.8 and 3.6
    assert cols["frft − vanilla"].startswith("2.450 ± ") and cols["frft_initial − frft"].startswith("0.100 ± ")
    assert cols["frft − random_refit"].startswith("3.200 ± ") and diffs[0] == "| adversarial"
    assert rows["adversarial"]["1+1"]["frft_rs0.25"] == 1.6 and rows["adversarial"]["0+0"]["frft_rs0.25_vs_sft"] == 0.7
    assert cols["frft_rs0.25 − frft_rs0.0"].startswith("0.300 ± ") and cols["frft_rs0.0 − frft"].startswith("0.200 ± ")
    assert rows["adversarial"]["0+0"]["sft"] == 0.9  # a later grid's SFT (another machine's run) does not replace it
