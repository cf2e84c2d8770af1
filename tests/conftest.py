"""Shared fixtures. Tests run on CPU, offline, with real Ray kept on loopback."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
os.environ.setdefault("RAY_SERVE_QUEUE_LENGTH_RESPONSE_DEADLINE_S", "1.0")
# where end-to-end tests write their run folders: one per parallel session, like FRFT_TEST_RAY_TMP
os.environ.setdefault("FRFT_TEST_RUNS", os.environ.get("FRFT_TEST_RAY_TMP", "/tmp/frft_test") + "_runs"
                      if "FRFT_TEST_RAY_TMP" in os.environ else "/tmp/frft_test_runs")
# Serve's direct ingress, the default on every Ray instance the project starts: Ray reads it once,
# when the session's Ray starts, so it is set here (tests/test_serve.py checks that mode on each replica)
from frft_ray.env import SERVE_INGRESS_ENV, apply_offline_defaults  # noqa: E402

apply_offline_defaults(SERVE_INGRESS_ENV)

import pytest  # noqa: E402


def pytest_collection_modifyitems(config, items):
    """Skip `gpu` tests where no CUDA device is visible."""
    try:
        import torch

        has_gpu = torch.cuda.is_available()
    except Exception:
        has_gpu = False
    if has_gpu:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray instance for the whole session, on loopback, with a short temp dir."""
    import ray

    if not ray.is_initialized():
        ray.init(
            address="local",
            num_cpus=2,
            include_dashboard=False,
            log_to_driver=False,
            object_store_memory=300 * 2**20,
            _temp_dir=os.environ.get("FRFT_TEST_RAY_TMP", "/tmp/frft_test_ray"),  # one per parallel session
        )
    yield ray
    if ray.is_initialized():
        ray.shutdown()


@pytest.fixture(scope="session")
def resumed_run(ray_local):
    """The micro run stopped after iteration 1, scaled, resumed with its endpoint live (tests/resumed_run.py)."""
    from pathlib import Path

    from resumed_run import run_stopped_scaled_resumed

    return run_stopped_scaled_resumed(Path(os.environ["FRFT_TEST_RUNS"]) / "resume")


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread: on a busy 2-core box, 2 spinning OpenMP threads slow tiny models up to ~10x."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
