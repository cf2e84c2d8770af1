"""The learner and rollout actors compute where their placement and `precision` say, and report it."""

import pytest
import torch

from frft_ray.config import ModelsConfig, config_from_dict
from frft_ray.models import build_policy, save_checkpoint, train_tokenizer


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory):
    texts = [f"\n\nHuman: Which box holds item {i}?\n\nAssistant: Box {i % 6} on shelf {i % 3}." for i in range(200)]
    tok = train_tokenizer(texts, 400, 96)
    path = tmp_path_factory.mktemp("devices") / "policy"
    save_checkpoint(path, build_policy(ModelsConfig(tiny={"n_layer": 1, "n_embd": 32, "n_head": 2}), tok), tok, None,
                    {"kind": "policy"})
    return str(path)


def run_cfg(**extra):
    return config_from_dict({"rollout": {"batch_size": 4, "max_new_tokens": 5}, "models": {"max_prompt_tokens": 32},
                             "resources": {"torch_threads": 1},
                             "placement": {"rollout": {"num_cpus": 0.25}, "learner": {"num_cpus": 0.25}}, **extra})


def test_learner_reports_its_device_and_resumes_from_a_cpu_loaded_state(ray_local, policy_dir, tmp_path):
    import ray

    from actors.learner import start_learner

    learner = start_learner(run_cfg())
    try:
        assert ray.get(learner.device_info.remote()) == "cpu/fp32"
        ray.get(learner.reset.remote(policy_dir, 0))
        saved = ray.get(learner.save.remote(str(tmp_path / "ckpt"), {"kind": "policy"}))
        assert ray.get(learner.restore.remote(saved)) == 0
    finally:
        ray.kill(learner)


@pytest.mark.parametrize("precision,expected", [("auto", "cpu/fp32"), ("bf16", "cpu/bf16")])
def test_rollout_worker_holds_weights_in_its_precision(ray_local, policy_dir, precision, expected):
    import ray

    from actors.rollout_worker import RolloutWorker
    from frft_ray.models import load_policy_checkpoint

    cfg = run_cfg(precision=precision)
    worker = RolloutWorker.options(**cfg.placement.rollout.ray_options()).remote(policy_dir, cfg, 0)
    try:
        assert ray.get(worker.device_info.remote()) == expected
        fp32_weights = load_policy_checkpoint(policy_dir).model.state_dict()  # what the learner sends
        assert ray.get(worker.set_weights.remote(fp32_weights, 1)) == 1
        assert ray.get(worker.device_info.remote()) == expected  # loading fp32 weights keeps the dtype
        b = ray.get(worker.generate.remote(["Which box holds item 3?", "Which box"], greedy=True))
        assert b.response_ids.device.type == "cpu" and b.logprobs.dtype == torch.float32
        assert b.policy_version == 1 and torch.isfinite(b.logprobs).all()
        assert ray.get(worker.load_checkpoint.remote(policy_dir)) == 0
        assert ray.get(worker.device_info.remote()) == expected
    finally:
        ray.kill(worker)
