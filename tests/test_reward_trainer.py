"""The run's RM trainer: one Ray Train worker group (DDP over 2 workers) serves fit after fit."""

import pytest
import torch

from frft_ray.config import config_from_dict
from frft_ray.models import load_reward_checkpoint, save_checkpoint
from test_bt import easy_pairs, tiny_rm, tok  # noqa: F401  (tok is a fixture)


@pytest.mark.slow
def test_one_worker_group_fits_again_and_again_then_reports_a_failed_fit(ray_local, tok, tmp_path):  # noqa: F811
    from actors.reward_trainer import RewardTrainerGroup, RMFitJob

    save_checkpoint(tmp_path / "rm0", tiny_rm(tok), tok, None, {"kind": "rm", "version": 0})
    # bf16 autocast on the CPU workers and gradient checkpointing under DDP: the GPU settings, run on the CPU
    cfg = config_from_dict({"precision": "bf16", "reward": {"num_workers": 2, "batch_size": 16,
                                                           "gradient_checkpointing": True},
                            "models": {"max_length": 64, "max_prompt_tokens": 16}, "rollout": {"max_new_tokens": 16},
                            "resources": {"torch_threads": 1},
                            "placement": {"reward_trainer": {"num_cpus": 0.5}}})
    train, heldout = easy_pairs(160, 1), easy_pairs(60, 2)
    group = RewardTrainerGroup(cfg, tmp_path / "ray_train").start()
    try:
        group.wait_ready()
        first = group.fit(RMFitJob(str(tmp_path / "rm0"), str(tmp_path / "rm1"), epochs=2, lr=3e-3, version=1,
                                   seed=0, meta={"kind": "rm", "version": 1}), train, heldout)
        second = group.fit(RMFitJob(str(tmp_path / "rm1"), str(tmp_path / "rm2"), epochs=1, lr=1e-3, version=2,
                                    seed=1, meta={"kind": "rm", "version": 2}), train[:41], heldout)
        assert first["eval_accuracy"] > 0.8 and second["eval_accuracy"] > 0.8
        assert first["pairs"] == 160 and second["pairs"] == 40  # equal shards over 2 DDP workers
        assert first["worker_pid"] == second["worker_pid"]  # the same worker process: no start-up per fit
        assert first["device"] == second["device"] == "cpu/bf16"
        rm2 = load_reward_checkpoint(tmp_path / "rm2")
        assert rm2.meta["version"] == 2 and rm2.meta["heldout_accuracy"] == second["eval_accuracy"]
        assert rm2.meta["device"] == "cpu/bf16"
        assert {p.dtype for p in rm2.model.state_dict().values()} == {torch.float32}  # fp32 master weights saved
        with pytest.raises(ValueError, match="at least 2 pairs"):
            group.fit(RMFitJob(str(tmp_path / "rm2"), str(tmp_path / "x"), 1, 1e-3, 3, 0), train[:1], heldout)
        with pytest.raises(RuntimeError, match="RM trainer lost: stopped while fitting RM v4"):
            group.fit(RMFitJob(str(tmp_path / "missing"), str(tmp_path / "rm4"), 1, 1e-3, 4, 0), train, heldout)
    finally:
        group.stop()
    assert not (tmp_path / "rm4").exists()


def test_worker_bundle_reaches_ray_train_with_its_gpu_fraction():
    """A GPU fraction per worker reaches Ray Train (use_gpu=True alone would ask a whole GPU per worker)."""
    from actors.reward_trainer import scaling_config

    gpu = scaling_config(config_from_dict({"reward": {"num_workers": 2},
                                           "placement": {"reward_trainer": {"num_cpus": 2, "num_gpus": 0.25}}}))
    assert gpu.use_gpu and gpu.num_workers == 2
    assert gpu.num_gpus_per_worker == 0.25 and gpu.num_cpus_per_worker == 2
    cpu = scaling_config(config_from_dict({}))
    assert not cpu.use_gpu and cpu.num_gpus_per_worker == 0 and cpu.num_cpus_per_worker == 1


@pytest.mark.gpu
def test_worker_on_a_gpu_fraction_fits_in_bf16(ray_local, tok, tmp_path):  # noqa: F811
    """placement.reward_trainer.num_gpus=0.25: the worker is placed on a quarter GPU and trains there."""
    from actors.reward_trainer import RMFitJob, fit_reward_model_ray

    save_checkpoint(tmp_path / "rm0", tiny_rm(tok), tok, None, {"kind": "rm", "version": 0})
    cfg = config_from_dict({"reward": {"batch_size": 16, "gradient_checkpointing": True},
                            "models": {"max_length": 64, "max_prompt_tokens": 16}, "rollout": {"max_new_tokens": 16},
                            "placement": {"reward_trainer": {"num_cpus": 0.5, "num_gpus": 0.25}}})
    job = RMFitJob(str(tmp_path / "rm0"), str(tmp_path / "rm1"), epochs=2, lr=3e-3, version=1, seed=0)
    out = fit_reward_model_ray(cfg, job, easy_pairs(160, 1), easy_pairs(60, 2), str(tmp_path / "ray_train"))
    assert out["device"] == "cuda:0/bf16" and out["eval_accuracy"] > 0.8
    saved = load_reward_checkpoint(tmp_path / "rm1")
    assert {p.dtype for p in saved.model.state_dict().values()} == {torch.float32}
