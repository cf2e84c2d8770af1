"""One micro run, stopped after iteration 1 (`frft.stop_after`), its rollout pool scaled from 1 to 2
workers, then resumed to the end, with its RM endpoint live throughout. Two modules check it:
test_pipeline.py (resume, scale, the endpoint following every refit) and test_driver_crash.py (it
is the uninterrupted result that a run killed twice, scaled at the same point and resumed must match).
"""

import json
import shutil
import threading
from pathlib import Path
from types import SimpleNamespace

# one arm, two iterations of two PPO steps, the smallest base models the micro config allows
# (same pool as the other micro runs: its embeddings are cached by them)
OVERRIDES = ["frft.arms=[frft]", "frft.steps_per_iteration=2", "sft.epochs=1", "reward.init_records=500",
             "eval.num_prompts=16"]
PORT = 18557


def run_stopped_scaled_resumed(run_dir: Path) -> SimpleNamespace:
    """Run the scenario on the session's Ray; return what each step gave, for the tests to check."""
    import requests
    from ray import serve

    from frft_ray import driver
    from frft_ray.cli import main
    from frft_ray.config import load_config
    from serve.launch import Endpoint, stop_server

    shutil.rmtree(run_dir, ignore_errors=True)
    cfg = load_config("micro", [*OVERRIDES, "frft.stop_after=1", "serve.enabled=true", f"serve.port={PORT}",
                                "serve.keep_alive=true"])
    url = f"http://127.0.0.1:{PORT}{Endpoint.for_folder(run_dir).route_prefix}"  # the run's own route
    out = SimpleNamespace(run_dir=run_dir, seen=[])
    stop = threading.Event()

    def poll():  # the model version the endpoint serves, every 0.3 s, across both invocations
        while not stop.is_set():
            try:
                out.seen.append(requests.get(f"{url}/v1/model", timeout=2).json()["model_version"])
            except (requests.RequestException, ValueError, KeyError):
                pass
            stop.wait(0.3)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    try:
        out.first = driver.run(cfg, run_dir)
        out.latest_after_stop = (run_dir / "latest").read_text().strip()
        out.summary_after_stop = (run_dir / "summary.json").exists()
        out.state1 = json.loads((run_dir / "ckpt/frft-iter-001/driver_state.json").read_text())
        # scale the rollout pool between iterations: the resumed driver picks it up at the boundary
        out.scale_rc = main(["scale", str(run_dir), "--rollout-workers", "2"])
        resumed = load_config(run_dir / "config.yaml", ["frft.stop_after=null"])
        out.summary = driver.run(resumed, run_dir, resume=True)
        out.again = driver.run(resumed, run_dir, resume=True)  # a finished run: nothing to do
        out.cli_again_rc = main(["run", "--resume", str(run_dir)])
        r = requests.post(f"{url}/v1/score", timeout=10,
                          json={"items": [{"prompt": "\n\nHuman: hi\n\nAssistant:", "response": " Hello."}]})
        out.score_status, out.score_version = r.status_code, r.json().get("model_version")
        out.model_info = requests.get(f"{url}/v1/model", timeout=10).json()  # what the endpoint serves, and how
    finally:
        stop.set()
        poller.join()
        stop_server(Endpoint.for_folder(run_dir).app_name)  # kept alive by the run: the app and its registry
        serve.shutdown()
    return out
