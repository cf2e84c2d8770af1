"""Weight sync from the learner to the rollout workers (`rollout.weight_sync`): packing, the method
choice, and real syncs: a gloo group over loopback (CPU) and CUDA IPC on one GPU (`gpu`)."""

import os
import signal

import pytest
import torch

from frft_ray.config import ModelsConfig, config_from_dict
from frft_ray.models import build_policy, save_checkpoint, train_tokenizer
from frft_ray.weight_pack import bucket_tensors, fingerprint, pack, unpack_into, views
from frft_ray.weight_sync import SyncDevice, WeightSyncError, choose

TINY = ModelsConfig(tiny={"n_layer": 1, "n_embd": 32, "n_head": 2})
TEXTS = [f"\n\nHuman: Where does parcel {i} go?\n\nAssistant: Gate {i % 5}, bay {i % 3}." for i in range(200)]
PROMPTS = [t.split(" Gate")[0] for t in TEXTS[:8]]
BF16, FP32 = torch.bfloat16, torch.float32


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(TEXTS, 400, 96)


def test_packed_weights_round_trip_bit_for_bit_with_tied_weights_sent_once(tok):
    src, dst = build_policy(TINY, tok, seed=0), build_policy(TINY, tok, seed=1)
    state = src.state_dict()
    assert state["lm_head.weight"].data_ptr() == state["transformer.wte.weight"].data_ptr()  # tied
    packed = pack(state, FP32, version=3, bucket_bytes=4096)  # small buckets: several of them
    assert len(packed.buckets) > 1 and packed.version == 3
    assert packed.nbytes < sum(t.numel() * 4 for t in state.values())  # the tied copy is not sent twice
    tied = [e for e in packed.entries if len(e.names) > 1]
    assert [set(e.names) for e in tied] == [{"lm_head.weight", "transformer.wte.weight"}]
    unpack_into(dst.state_dict(), packed.entries, bucket_tensors(packed))
    for name, t in dst.state_dict().items():
        assert torch.equal(t, state[name]), name
    assert fingerprint(dst.state_dict(), FP32) == fingerprint(state, FP32)


def test_bf16_packing_halves_the_bytes_and_matches_a_plain_cast(tok):
    state = build_policy(TINY, tok, seed=0).state_dict()
    fp32, bf16 = pack(state, FP32, 1), pack(state, BF16, 1)
    assert abs(bf16.nbytes / fp32.nbytes - 0.5) < 0.01
    got = views(bf16.entries, bucket_tensors(bf16))
    for name, t in state.items():
        assert got[name].dtype == BF16 and torch.equal(got[name], t.to(BF16)), name
    assert fingerprint(got, BF16) == fingerprint(state, BF16) != fingerprint(state, FP32)


def _dev(gpu, node="10.0.0.1"):
    return SyncDevice(node, gpu, BF16 if gpu else FP32)


@pytest.mark.parametrize("learner,workers,method,backend", [
    (None, [None, None], "object_store", None),  # CPU-only
    ("g0", ["g0", "g0"], "cuda_ipc", None),  # fractional GPUs on one card
    ("g0", ["g1", "g2"], "collective", "nccl"),  # one GPU each
    ("g0", ["g1", "g1"], "object_store", None),  # two workers on one GPU: no NCCL, and no IPC with the learner
    ("g0", [None], "object_store", None),  # learner on a GPU, workers on CPUs
])
def test_auto_chooses_by_where_the_ranks_hold_their_weights(learner, workers, method, backend):
    plan = choose("auto", _dev(learner), [_dev(w) for w in workers])
    assert (plan.method, plan.backend) == (method, backend)
    assert plan.dtype == (BF16 if workers[0] else FP32)
    assert plan.describe().startswith(method)


def test_a_method_that_cannot_work_here_fails_naming_the_key():
    cpu = [_dev(None), _dev(None)]
    assert choose("collective", _dev(None), cpu).backend == "gloo"
    with pytest.raises(WeightSyncError, match=r"rollout.weight_sync=cuda_ipc needs .* one CUDA device"):
        choose("cuda_ipc", _dev(None), cpu)
    with pytest.raises(WeightSyncError, match=r"rollout.weight_sync=collective .*NCCL refuses two ranks on one GPU"):
        choose("collective", _dev("g0"), [_dev("g0")])
    with pytest.raises(WeightSyncError, match="rollout.weight_sync must be one of"):
        choose("rdma", _dev(None), cpu)
    with pytest.raises(ValueError, match="rollout.weight_sync"):
        config_from_dict({"rollout": {"weight_sync": "rdma"}})


# ------------------------------------------------------------ real syncs between actors
@pytest.fixture(scope="module")
def policy_dir(tok, tmp_path_factory):
    path = tmp_path_factory.mktemp("sync") / "policy"
    save_checkpoint(path, build_policy(TINY, tok, seed=0), tok, None, {"kind": "policy"})
    return str(path)


def _roles(policy_dir, method, workers, gpu_share=0.0):
    from actors.learner import start_learner
    from actors.rollout_pool import RolloutPool
    from frft_ray.phases import pad_id

    cfg = config_from_dict({
        "rollout": {"num_workers": workers, "batch_size": 8, "max_new_tokens": 8, "weight_sync": method},
        "models": {"max_prompt_tokens": 32}, "resources": {"torch_threads": 1},
        "ppo": {"batch_size": 8, "minibatch_size": 4, "epochs": 1, "lr": 1e-2},
        "placement": {"rollout": {"num_cpus": 0.25, "num_gpus": gpu_share},
                      "learner": {"num_cpus": 0.25, "num_gpus": gpu_share}}})
    learner = start_learner(cfg)
    import ray

    ray.get(learner.reset.remote(policy_dir, 0))
    pool = RolloutPool(policy_dir, cfg, pad_id(policy_dir))
    pool.attach_learner(learner)
    return learner, pool


def _ppo_step_and_sync(learner, pool) -> int:
    """Generate, one PPO update on the learner (rewards given), then the new version to every worker."""
    import ray

    batch = pool.generate(PROMPTS)
    stats = ray.get(learner.train_step.remote(batch, [float(i % 2) for i in range(len(PROMPTS))]))
    pool.sync_from_learner(stats["policy_version"])
    return stats["policy_version"]


def _assert_workers_hold(learner, pool, version):
    """Every worker holds the learner's weights bit for bit, and so does the object-store path's object."""
    import ray

    dtype = pool.sync.plan.dtype
    v, want = ray.get(learner.weights_fingerprint.remote(dtype))
    packed = ray.get(learner.get_weights.remote(dtype, version))  # the object-store path, for comparison
    assert v == version and fingerprint(views(packed.entries, bucket_tensors(packed)), dtype) == want
    assert ray.get([w.weights_fingerprint.remote(dtype) for w in pool.workers]) == [want] * pool.size
    assert ray.get([w.get_version.remote() for w in pool.workers]) == [version] * pool.size
    assert pool.check_weights()


def test_gloo_collective_sync_matches_the_object_store_and_survives_a_restart(ray_local, policy_dir):
    import ray

    learner, pool = _roles(policy_dir, "collective", workers=2)
    try:
        assert (pool.sync.plan.method, pool.sync.plan.backend) == ("collective", "gloo")
        before = ray.get(pool.workers[0].weights_fingerprint.remote(FP32))
        v1 = _ppo_step_and_sync(learner, pool)
        assert v1 == 1 and pool.sync.generation == 1 and pool._weights_ref is None  # nothing kept in the store
        _assert_workers_hold(learner, pool, v1)
        assert ray.get(pool.workers[0].weights_fingerprint.remote(FP32)) != before  # the update did arrive

        # a worker killed between syncs: restored to v1 from the learner, then a new group forms at v2
        victim = ray.get(pool.workers[1].pid.remote())
        os.kill(victim, signal.SIGKILL)
        v2 = _ppo_step_and_sync(learner, pool)
        assert pool.restarts == 1 and ray.get(pool.workers[1].pid.remote()) != victim
        assert v2 == 2 and pool.sync.generation == 2
        _assert_workers_hold(learner, pool, v2)
    finally:
        pool.shutdown()
        ray.kill(learner)


@pytest.mark.gpu
def test_cuda_ipc_sync_on_one_shared_gpu(ray_local, policy_dir):
    """Learner and one rollout worker at num_gpus=0.25 on one card: auto picks CUDA IPC, in bf16."""
    import ray

    learner, pool = _roles(policy_dir, "auto", workers=1, gpu_share=0.25)
    try:
        assert pool.sync.plan.method == "cuda_ipc" and pool.sync.plan.dtype == BF16
        _assert_workers_hold(learner, pool, _ppo_step_and_sync(learner, pool))
        assert ray.get(pool.workers[0].device_info.remote()).endswith("/bf16")
    finally:
        pool.shutdown()
        ray.kill(learner)
