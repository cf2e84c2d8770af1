"""`frft-ray sft` and `frft-ray train-rm` on small benchmark data: real training, real checkpoints."""

import json
import shutil
from pathlib import Path

from frft_ray.cli import main
from frft_ray.models import load_policy_checkpoint, load_reward_checkpoint

SMALL = ["data.benchmark.sft_size=200", "data.benchmark.pool_size=400", "reward.heldout_pairs=60", "reward.init_epochs=3"]


def test_sft_cli_writes_a_policy_that_learned(tmp_path, capsys, one_torch_thread):
    rc = main(["sft", "--config", "micro", "--set", "data.benchmark.sft_size=200", "--set", "sft.epochs=1",
               "--out", str(tmp_path / "sft")])
    assert rc == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert metrics["loss_end"] < metrics["loss_start"]
    loaded = load_policy_checkpoint(tmp_path / "sft")
    assert loaded.meta["stage"] == "sft" and (tmp_path / "sft" / "frft_config.yaml").exists()


def test_train_rm_cli_fits_through_ray_train(ray_local, capsys):
    out = Path("/tmp/frft_test_runs/train_rm")
    shutil.rmtree(out.parent / "train_rm", ignore_errors=True)
    args = ["train-rm", "--config", "micro", "--out", str(out)]
    for s in SMALL:
        args += ["--set", s]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["records"] == 340 and result["heldout_accuracy"] > 0.5
    rm = load_reward_checkpoint(out)
    assert rm.meta["kind"] == "rm" and rm.meta["heldout_accuracy"] == result["heldout_accuracy"]


def test_run_cli_names_a_bad_override_and_exits_2(capsys):
    assert main(["run", "--set", "ppo.kl_cof=0.1"]) == 2
    assert "ppo.kl_cof" in capsys.readouterr().err
