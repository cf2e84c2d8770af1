"""`frft-ray sft` and `frft-ray train-rm` on small benchmark data: real training, real checkpoints."""

import json
import os
import shutil
from pathlib import Path

from frft_ray.cli import main
from frft_ray.models import load_policy_checkpoint, load_reward_checkpoint

SMALL = ["data.benchmark.sft_size=200", "data.benchmark.pool_size=400", "reward.heldout_pairs=60", "reward.init_epochs=3"]


def test_sft_cli_writes_a_policy_that_learned(tmp_path, capsys, one_torch_thread):
    """Also the end-to-end run of length-grouped SFT batches (off by default)."""
    rc = main(["sft", "--config", "micro", "--set", "data.benchmark.sft_size=200", "--set", "sft.epochs=1",
               "--set", "sft.length_grouping=4", "--out", str(tmp_path / "sft")])
    assert rc == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert metrics["loss_end"] < metrics["loss_start"]
    loaded = load_policy_checkpoint(tmp_path / "sft")
    assert loaded.meta["stage"] == "sft" and (tmp_path / "sft" / "frft_config.yaml").exists()


def test_train_rm_cli_fits_through_ray_train(ray_local, capsys):
    """Also the end-to-end run of plain shuffled RM batches (reward.length_grouping=1; the default groups)."""
    out = Path(os.environ["FRFT_TEST_RUNS"]) / "train_rm"
    shutil.rmtree(out.parent / "train_rm", ignore_errors=True)
    args = ["train-rm", "--config", "micro", "--out", str(out), "--set", "reward.dropout=null",  # GPT-2's own 0.1
            "--set", "reward.length_grouping=1"]
    for s in SMALL:
        args += ["--set", s]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["records"] == 340 and result["heldout_accuracy"] > 0.5
    rm = load_reward_checkpoint(out)
    assert rm.meta["kind"] == "rm" and rm.meta["heldout_accuracy"] == result["heldout_accuracy"]
    assert rm.meta["dropout"] is None and rm.model.config.resid_pdrop == 0.1  # the fit left the model's own


def test_run_cli_names_a_bad_override_and_exits_2(capsys):
    assert main(["run", "--set", "ppo.kl_cof=0.1"]) == 2
    assert "ppo.kl_cof" in capsys.readouterr().err


def test_every_command_group_is_registered():
    from frft_ray.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert {"data", "run", "sft", "train-rm", "eval", "scale", "serve", "score", "submit", "jobs"} <= set(sub.choices)


def test_user_errors_take_one_path(tmp_path, capsys):
    """Handlers raise; main prints one `frft-ray: error: ...` line on stderr and returns 2."""
    cases = [
        (["scale", str(tmp_path), "--rollout-workers", "2"], "is not a run folder"),
        (["run", "--resume", str(tmp_path)], "no config.yaml there"),
        (["submit", "--address", "http://127.0.0.1:9", "--env", "BAD"], "--env 'BAD' must look like NAME=VALUE"),
        (["serve", "--checkpoint", str(tmp_path), "--set", "serve.prot=1"], "serve.prot"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("frft-ray: error: ") and message in err, (argv, err)


def test_serve_accepts_config_overrides():
    from frft_ray.cli import build_parser
    from serve.cli import _run_config

    args = build_parser().parse_args(["serve", "--checkpoint", "x", "--set", "serve.port=9001", "--replicas", "2",
                                      "--set", "placement.serve.num_cpus=0.5", "--set", "resources.temp_dir=/tmp/x"])
    cfg = _run_config(args)
    assert (cfg.serve.port, cfg.serve.replicas, cfg.serve.host) == (9001, 2, "127.0.0.1")
    assert cfg.placement.serve.ray_options() == {"num_cpus": 0.5, "num_gpus": 0.0}  # each replica's reservation
    assert cfg.resources.temp_dir == "/tmp/x"  # the Ray instance serve starts follows resources.*
    default = _run_config(build_parser().parse_args(["serve", "--checkpoint", "x"]))
    assert default.placement.serve.num_cpus == 0.25
