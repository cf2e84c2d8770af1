"""Start, publish to and stop the RM endpoint from Python (the CLI and the FRFT driver use these).

    ep = Endpoint.for_folder("runs/demo")                        # this run's app, registry and route
    url = start_server(cfg.serve, "runs/demo/iter_000/rm", app_name=ep.app_name, route_prefix=ep.route_prefix)
    replica_urls(ep.app_name)                                    # direct ingress: one URL per replica
    publish_rm("runs/demo/iter_001/rm", app_name=ep.app_name)    # after each refit: hot swap
    stop_server(ep.app_name)

Each run (and each folder `frft-ray serve` serves) gets its own Serve app, version registry and
route prefix, so two runs on one cluster never serve each other's RM or refuse each other's
versions. The plain `APP_NAME` at "/" remains the default for code that serves one RM.

`url` is the stable address (Serve's proxy, which routes to every replica). With direct ingress
(`frft_ray.env.SERVE_INGRESS_ENV`, the default on Ray instances the project starts) each replica
also answers on its own port, without the proxy hop: `replica_urls` lists those (docs/serve.md).

The bearer token never enters Ray: `start_server` reads it (`serve.settings.resolve_token`) and
hands replicas only its SHA-256.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import ray
import requests
from ray import serve

from frft_ray.config import PlacementConfig, RolePlacement, ServeConfig
from frft_ray.models import checkpoint_folder, read_meta
from serve.settings import ReplicaSettings, check_port_free
from serve.versions import get_registry

APP_NAME = "frft_rm"
log = logging.getLogger("frft_ray")


@dataclass(frozen=True)
class Endpoint:
    """The Serve app name (also its version registry's) and route prefix of one served folder."""

    app_name: str = APP_NAME
    route_prefix: str = "/"

    @classmethod
    def for_folder(cls, folder: str | Path) -> "Endpoint":
        """A run folder's endpoint (or a checkpoint folder's): its name plus a hash of its absolute path,
        so `runs/demo` and `/tmp/demo` differ while a resume of the same folder finds its own again."""
        path = Path(folder).expanduser().resolve()
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", path.name).strip("-.")[:40] or "run"
        slug = f"{slug}-{hashlib.sha256(str(path).encode()).hexdigest()[:6]}"
        return cls(f"{APP_NAME}-{slug}", f"/{slug}")


def check_rm_checkpoint(path: str | Path) -> Path:
    """The absolute path of an RM checkpoint folder; FileNotFoundError naming it when it holds none."""
    return checkpoint_folder(path, "reward-model").resolve()


def publish_rm(path: str | Path, version: int | None = None, meta: dict | None = None, app_name: str = APP_NAME) -> dict:
    """Make the checkpoint at `path` the served RM; replicas swap to it within ~`ReplicaSettings.poll_s` + load time.

    `version` defaults to meta.json's "version", else current + 1. It must be newer than the
    current version (ValueError otherwise), except that the current (version, path) again is a
    no-op. Returns the registry entry.
    """
    path = check_rm_checkpoint(path)
    meta = {**read_meta(path), **(meta or {})}
    registry = get_registry(app_name, create=True)
    cur = ray.get(registry.current.remote())
    if version is None:
        version = meta.get("version")
    if version is None:
        version = 1 if cur is None else cur["version"] + 1
    if cur is not None and (int(version), str(path)) == (cur["version"], cur["path"]):
        return cur  # published already (a resume, a retried call): nothing to do
    if cur is not None and int(version) <= cur["version"]:  # the registry checks again (races)
        raise ValueError(f"RM version {version} is not newer than the current version {cur['version']} "
                         f"({cur['path']}); versions never go backwards: pass a larger --version")
    meta["version"] = int(version)
    return ray.get(registry.publish.remote(int(version), str(path), meta))


def current_version(app_name: str = APP_NAME) -> dict | None:
    return ray.get(get_registry(app_name).current.remote())


def publish_resumed(path: str | Path, version: int, app_name: str = APP_NAME) -> dict:
    """Make a (resumed) run's newest RM the served one; returns the registry entry it serves as.

    The version is the larger of the run's and the registry's: the same (version, path) again is
    a no-op; a registry that is ahead (the run crashed between publishing and checkpointing, or kept
    its endpoint alive) gets the checkpoint republished as its version + 1, so the run's next refit
    must be newer than that, never "not newer".
    """
    path = check_rm_checkpoint(path)
    cur = ray.get(get_registry(app_name, create=True).current.remote())
    if cur is not None and (cur["version"], cur["path"]) != (int(version), str(path)) and cur["version"] >= version:
        log.info("the endpoint's registry is at RM v%d (%s); serving this run's %s as v%d",
                 cur["version"], cur["path"], path, cur["version"] + 1)
        version = cur["version"] + 1
    return publish_rm(path, version, app_name=app_name)


def start_server(
    cfg: ServeConfig,
    checkpoint: str | Path,
    version: int | None = None,
    app_name: str = APP_NAME,
    route_prefix: str = "/",
    placement: RolePlacement | None = None,
    torch_threads: int = 1,
    precision: str = "auto",
) -> str:
    """Deploy the RM app (needs `ray.init` first) serving `checkpoint`; returns its base URL.

    Each replica is placed by `placement` (the run config's `placement.serve`; default: its defaults)
    and computes on its device in `precision` (the run config's; frft_ray/devices.py).

    If the app's registry already holds a version (a restart), `checkpoint` is published only
    when `version` is newer, so versions never go backwards.
    """
    from serve.app import RewardModelServer

    if not ray.is_initialized():
        raise RuntimeError("start_server needs a Ray connection: call ray.init() first")
    placement = placement or PlacementConfig().serve
    settings = ReplicaSettings.from_config(cfg, torch_threads, placement.num_gpus, precision)  # token, bind check
    registry = get_registry(app_name, create=True)
    cur = ray.get(registry.current.remote())
    if cur is None or (version is not None and version > cur["version"]):
        publish_rm(checkpoint, version, app_name=app_name)
    if _controller(required=False) is None:  # Serve starts now, its proxy on this node among others
        check_port_free(cfg)
    serve.start(http_options={"host": cfg.host, "port": cfg.port, "request_timeout_s": cfg.request_timeout_s})
    options: dict = {
        "max_ongoing_requests": cfg.max_ongoing_requests,
        "ray_actor_options": placement.ray_options(),
        "logging_config": {"enable_access_log": cfg.access_log},
    }
    if cfg.autoscale_max_replicas and cfg.autoscale_max_replicas > cfg.replicas:
        options["autoscaling_config"] = {
            "min_replicas": cfg.replicas,
            "initial_replicas": cfg.replicas,
            "max_replicas": cfg.autoscale_max_replicas,
            "target_ongoing_requests": max(2, cfg.max_batch_size),
        }
    else:
        options["num_replicas"] = cfg.replicas
    app = RewardModelServer.options(**options).bind(app_name, settings)
    serve.run(app, name=app_name, route_prefix=route_prefix, blocking=False)
    http = ray.get(_controller().get_http_config.remote())  # Serve already running keeps its own host/port
    if (http.host, http.port) != (cfg.host, cfg.port):
        log.warning("Serve was already running on %s:%s; serve.host/serve.port (%s:%s) do not apply",
                    http.host, http.port, cfg.host, cfg.port)
    host = "127.0.0.1" if http.host in ("0.0.0.0", "::") else http.host
    return f"http://{host}:{http.port}{route_prefix.rstrip('/')}"


def _controller(required: bool = True):
    """The Serve controller's handle; None when Serve is not running and not `required`."""
    from ray.serve.context import _get_global_client

    client = _get_global_client(raise_if_no_controller_running=required)
    return client._controller if client is not None else None


def url_lines(url: str, replicas: list[str]) -> list[str]:
    """How to reach an endpoint, for the CLI and the run log: every full URL, OpenRLHF's included."""
    lines = [f"RM endpoint: {url}  (POST {url}/v1/score, GET {url}/health, GET {url}/v1/model)",
             f"OpenRLHF remote_url: {url}/get_reward"]
    if replicas:
        lines.append(f"each replica also answers on its own port, without the proxy hop: {' '.join(replicas)}")
    return lines


def replica_urls(app_name: str = APP_NAME, timeout_s: float = 30.0) -> list[str]:
    """Base URLs of the app's running replicas under direct ingress (route prefix included);
    [] when Serve runs without it (every request then goes through the proxy at the stable URL).

    Asks Serve's controller for the targets it would give a load balancer (`get_target_groups`,
    a Ray 2.60 controller method with no public wrapper): without direct ingress they are the
    proxies, named for no app. Waits up to `timeout_s` for a replica to have its port, since
    `serve.run` returns before the port is recorded (until then the app's target is the proxy).
    """
    controller = _controller()
    proxy_port = ray.get(controller.get_http_config.remote()).port
    deadline = time.monotonic() + timeout_s
    while True:
        groups = [g for g in ray.get(controller.get_target_groups.remote(app_name))
                  if g.app_name == app_name and g.protocol == "HTTP"]
        if not groups:
            return []
        urls = [f"http://{t.ip}:{t.port}{g.route_prefix.rstrip('/')}" for g in groups for t in g.targets
                if t.port != proxy_port]
        if urls or time.monotonic() > deadline:
            return sorted(urls)
        time.sleep(0.2)


def stop_server(app_name: str = APP_NAME) -> None:
    """Delete the app and its version registry (Serve itself keeps running for other apps)."""
    from ray.serve.exceptions import RayServeException

    try:
        serve.delete(app_name)  # no such app: nothing to do
    except RayServeException:  # no Serve instance on this cluster (any more)
        pass
    try:
        ray.kill(get_registry(app_name))
    except LookupError:
        pass


def wait_for_version(url: str, version: int, timeout_s: float = 60.0, token: str | None = None) -> dict:
    """Poll GET /health until the endpoint answers with `version` or newer (one replica's view)."""
    deadline, last = time.monotonic() + timeout_s, None
    while time.monotonic() < deadline:
        try:
            r = requests.get(f"{url}/health", timeout=5)
            if r.ok:
                last = r.json()
                if last["model_version"] >= version:
                    return last
        except requests.RequestException as e:
            last = {"error": repr(e)}
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not serve RM version {version} within {timeout_s} s (last: {last})")


# ---------------------------------------------------------------- run-directory layout


def rm_checkpoint_for_run(run_dir: str | Path) -> Path:
    """The RM checkpoint of a run's latest complete iteration: RUN_DIR/<text of RUN_DIR/latest>/rm."""
    run_dir = Path(run_dir)
    pointer = run_dir / "latest"
    if not pointer.exists():
        raise FileNotFoundError(f"{run_dir} has no 'latest' pointer: not a run directory, or no iteration finished yet")
    folder = pointer.read_text().strip()
    return check_rm_checkpoint(run_dir / folder / "rm")


def write_state(state_file: str | Path, url: str, app_name: str = APP_NAME, replica_urls: list[str] = ()) -> None:
    """Record where a blocking `frft-ray serve` runs, so `--reload` from another shell can find it."""
    state = {"url": url, "replica_urls": list(replica_urls), "app_name": app_name,
             "ray_address": ray.get_runtime_context().gcs_address, "pid": os.getpid()}
    Path(state_file).parent.mkdir(parents=True, exist_ok=True)
    Path(state_file).write_text(json.dumps(state, indent=2))
