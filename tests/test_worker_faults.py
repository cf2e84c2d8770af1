"""Roles that die: a rollout worker killed with SIGKILL comes back with the pool's current weights and the
batch stays whole; a dead learner stops the run with a message naming it and how to resume."""

import os
import signal
import threading
import time

import pytest

from frft_ray.config import ModelsConfig, config_from_dict
from frft_ray.models import build_policy, save_checkpoint, train_tokenizer

TINY = ModelsConfig(tiny={"n_layer": 1, "n_embd": 32, "n_head": 2})
TEXTS = [f"\n\nHuman: How do I fold shape {i}?\n\nAssistant: Fold edge {i % 4} then press." for i in range(200)]
PROMPTS = [t.split(" Fold")[0] for t in TEXTS[:9]]


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
    """A saved tiny policy (weights v0) and a different state dict to send as weights v1."""
    tok = train_tokenizer(TEXTS, 400, 96)
    path = tmp_path_factory.mktemp("restart") / "p"
    save_checkpoint(path, build_policy(TINY, tok, seed=0), tok, None, {"kind": "policy"})
    return str(path), tok.pad_token_id, build_policy(TINY, tok, seed=1).state_dict()


def _pid(pool, i: int) -> int:
    import ray

    return ray.get(pool.workers[i].pid.remote())


def test_a_killed_worker_is_restored_to_the_current_weights(ray_local, policy):
    from actors.rollout_pool import RolloutPool

    path, pad, weights_v1 = policy
    cfg = config_from_dict({"rollout": {"num_workers": 2, "batch_size": 8, "max_new_tokens": 24},
                            "models": {"max_prompt_tokens": 48}, "resources": {"torch_threads": 1},
                            "placement": {"rollout": {"num_cpus": 0.25}}})
    with RolloutPool(path, cfg, pad) as pool:
        base = pool.generate(PROMPTS, greedy=True)
        pool.set_weights(weights_v1, 1)
        current = pool.generate(PROMPTS, greedy=True)
        assert current.responses != base.responses  # v1 writes differently from the checkpoint Ray restarts from

        # killed between two calls: the next generate restores it to v1 and returns the whole batch
        before = _pid(pool, 1)
        os.kill(before, signal.SIGKILL)
        after_idle_kill = pool.generate(PROMPTS, greedy=True)
        assert pool.restarts == 1 and _pid(pool, 1) != before
        assert after_idle_kill.policy_version == 1 and after_idle_kill.prompts == PROMPTS
        assert after_idle_kill.responses == current.responses

        # killed while a generate may be in flight: that worker's share is retried once (or the kill
        # lands after it finished and the next call restores it); either way two restarts in all
        out = {}
        gen = threading.Thread(target=lambda: out.setdefault("batch", pool.generate(PROMPTS * 16, greedy=True)))
        victim = _pid(pool, 0)
        gen.start()
        time.sleep(0.5)
        os.kill(victim, signal.SIGKILL)
        gen.join(120)
        assert not gen.is_alive()
        last = pool.generate(PROMPTS, greedy=True)
        assert pool.restarts == 2
        assert out["batch"].policy_version == last.policy_version == 1
        assert out["batch"].prompts == PROMPTS * 16 and len(out["batch"].responses) == len(PROMPTS) * 16
        assert last.responses == current.responses


def test_a_dead_learner_is_named_with_the_resume_command(ray_local, tmp_path):
    import ray

    from actors.learner import start_learner
    from frft_ray.faults import RoleDiedError
    from frft_ray.workers import role_died

    learner = start_learner(config_from_dict({"placement": {"learner": {"num_cpus": 0.25}}}))
    ray.kill(learner)
    with pytest.raises(ray.exceptions.RayActorError) as caught:
        ray.get(learner.get_version.remote())
    died = role_died(caught.value, {"rollout worker": [], "learner": [learner]})
    assert isinstance(died, RoleDiedError) and died.role == "learner"
    msg = str(died.in_run(tmp_path))
    assert msg.startswith("learner lost: ActorDiedError") and msg.endswith(f"frft-ray run --resume {tmp_path}")
    assert role_died(ValueError("not a death"), {"learner": [learner]}) is None
