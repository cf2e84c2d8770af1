"""Submit frft-ray runs to a Ray cluster as Ray Jobs, and look after them (status, logs, stop).

Everything goes through Ray's own `JobSubmissionClient` (HTTP to the dashboard, port 8265).
What this module adds on top of it:

- the project folder is uploaded as the job's `working_dir`, minus what a run never needs
  (`.git`, `.venv`, run folders, caches), and its zipped size is measured *before* the upload,
  so a too-big folder fails here with the largest entries named, not half-way through an upload;
- the run config is validated locally first, so a typo fails with the key named before any
  cluster work starts;
- token authentication (on by default in Ray 2.60) works without `export RAY_AUTH_MODE=token`:
  the token is read the way Ray reads it and sent as a bearer header (see `auth_headers`);
- the entrypoint is `python -m frft_ray.cli run ...`, so the *uploaded* code runs (Ray puts the
  working_dir first on PYTHONPATH) and the cluster image only needs the dependencies.
"""

from __future__ import annotations

import os
import shlex
import tempfile
import time
from pathlib import Path
from typing import Mapping, Sequence

from frft_ray.env import HUB_OFFLINE_ENV

# Patterns use .gitignore syntax, relative to the uploaded folder (Ray matches them with pathspec).
DEFAULT_EXCLUDES: tuple[str, ...] = (
    ".git/",
    ".venv/",
    "venv/",
    "runs/",
    "__pycache__/",
    "*.pyc",
    "*.egg-info/",
    ".cache/",
    ".pytest_cache/",
    ".mypy_cache/",
    ".ruff_cache/",
    ".ipynb_checkpoints/",
    "ray_results/",
    "build/",
    "dist/",
)

# Variables copied from the submitting shell into the job when they are set there. Never the auth
# token: a job's runtime_env is readable by anyone who can list jobs.
PASSTHROUGH_ENV: tuple[str, ...] = (
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER",
    "TQDM_DISABLE",
    "HF_HUB_DISABLE_PROGRESS_BARS",
    "TOKENIZERS_PARALLELISM",
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S",
    "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER",
    "RAY_TRAIN_ENABLE_PRINT_PATCH",
    "RAY_SERVE_QUEUE_LENGTH_RESPONSE_DEADLINE_S",
)
# --offline (the default) adds frft_ray.env.HUB_OFFLINE_ENV (HF_HUB_OFFLINE, TRANSFORMERS_OFFLINE).
# The run's own ray.init(runtime_env=...) adds env vars on top of the job's; without this Ray 2.60
# refuses any overlap ("Failed to merge the Job's runtime env ... because of a conflict").
JOB_ENV = {"RAY_OVERRIDE_JOB_RUNTIME_ENV": "1"}
# Never passed in a job's env: the Ray token, and the RM endpoint's bearer token (ServeConfig.auth_token_env's
# default; give a job the endpoint's token with serve.auth_token_file on the cluster instead)
SECRET_ENV = ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "FRFT_RAY_TOKEN")


class JobError(RuntimeError):
    """A submission or job query failed; the message says what to change."""


# ---------------------------------------------------------------- authentication


def _read_token_file(path: Path, origin: str) -> str:
    try:
        token = path.read_text().strip()
    except OSError as e:
        raise JobError(f"{origin}: cannot read the Ray auth token file {path}: {e.strerror}") from None
    if not token:
        raise JobError(f"{origin}: the Ray auth token file {path} is empty")
    return token


def resolve_token(env: Mapping[str, str] | None = None) -> str | None:
    """The Ray auth token, looked up in Ray's own order: RAY_AUTH_TOKEN, the file named by
    RAY_AUTH_TOKEN_PATH, then ~/.ray/auth_token. None when there is none."""
    env = os.environ if env is None else env
    if env.get("RAY_AUTH_TOKEN", "").strip():
        return env["RAY_AUTH_TOKEN"].strip()
    if env.get("RAY_AUTH_TOKEN_PATH"):
        return _read_token_file(Path(env["RAY_AUTH_TOKEN_PATH"]).expanduser(), "RAY_AUTH_TOKEN_PATH")
    home = Path(env.get("HOME") or Path.home())
    default = home / ".ray" / "auth_token"
    if default.is_file() and default.read_text().strip():
        return default.read_text().strip()
    return None


def auth_headers(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """HTTP headers that authenticate us to a token-auth cluster.

    RAY_AUTH_MODE=disabled sends nothing. RAY_AUTH_MODE=token requires a token. Unset: send the
    token if one is found (Ray 2.60 clusters have token auth on by default, while Ray's client
    only sends it when RAY_AUTH_MODE=token is exported, the pitfall this removes).
    """
    env = os.environ if env is None else env
    mode = env.get("RAY_AUTH_MODE", "").strip().lower()
    if mode == "disabled":
        return {}
    token = resolve_token(env)
    if token is None:
        if mode == "token":
            raise JobError(
                "RAY_AUTH_MODE=token but no Ray auth token was found: set RAY_AUTH_TOKEN, or "
                "RAY_AUTH_TOKEN_PATH=<file>, or copy the head node's token into ~/.ray/auth_token "
                "(run `ray get-auth-token` on the head)"
            )
        return {}
    return {"Authorization": f"Bearer {token}"}


def make_client(address: str, env: Mapping[str, str] | None = None):
    """A JobSubmissionClient for the dashboard at `address` (http://HEAD:8265), authenticated."""
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient

    if not address:
        raise JobError("no cluster address: pass --address http://HEAD:8265 (or set RAY_API_SERVER_ADDRESS)")
    if "://" not in address:
        address = f"http://{address}"
    try:
        return JobSubmissionClient(address, headers=auth_headers(env))
    except AuthenticationError as e:
        raise JobError(
            f"the cluster at {address} refused our credentials: {str(e).splitlines()[0]}\n"
            "The cluster uses token authentication: give this client the head's token via "
            "RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token (`ray get-auth-token` on the head)."
        ) from None
    except ConnectionError as e:
        raise JobError(f"cannot reach the Ray dashboard at {address}: {e}") from None


# ---------------------------------------------------------------- the upload


def project_root() -> Path:
    """The folder to upload: the checkout this package runs from (it holds pyproject.toml)."""
    here = Path(__file__).resolve().parent.parent
    if (here / "pyproject.toml").is_file():
        return here
    cwd = Path.cwd()
    if (cwd / "pyproject.toml").is_file() and (cwd / "frft_ray").is_dir():
        return cwd
    raise JobError(
        "cannot find the frft-ray project folder to upload (no pyproject.toml next to frft_ray/); "
        "pass --working-dir"
    )


def upload_limit_bytes() -> int:
    """Ray's cap on one runtime_env package: the gRPC message limit (512 MiB unless the cluster
    sets RAY_max_grpc_message_size)."""
    from ray._private.runtime_env.packaging import GCS_STORAGE_MAX_SIZE

    return int(GCS_STORAGE_MAX_SIZE)


def package_size(root: str | Path, excludes: Sequence[str] = DEFAULT_EXCLUDES) -> int:
    """Bytes of the zip Ray would upload for `root`: built with Ray's own packer, same excludes,
    same .gitignore/.rayignore handling, so the number is the real upload size."""
    from ray._private.ray_constants import RAY_RUNTIME_ENV_IGNORE_GITIGNORE
    from ray._private.runtime_env.packaging import create_package

    include_gitignore = os.environ.get(RAY_RUNTIME_ENV_IGNORE_GITIGNORE, "0") != "1"
    with tempfile.TemporaryDirectory(prefix="frft_pkg_") as tmp:
        target = Path(tmp) / "pkg.zip"
        create_package(str(root), target, include_gitignore=include_gitignore, excludes=list(excludes))
        return target.stat().st_size


def _largest_entries(root: Path, excludes: Sequence[str], n: int = 5) -> list[tuple[int, str]]:
    """Top-level entries of `root` by size on disk, skipping excluded ones (for the error message)."""
    from ray._private.thirdparty.pathspec import PathSpec  # the matcher Ray's packer uses

    spec = PathSpec.from_lines("gitwildmatch", list(excludes))
    sizes = []
    for entry in root.iterdir():
        rel = entry.name + ("/" if entry.is_dir() else "")
        if spec.match_file(rel):
            continue
        if entry.is_dir():
            total = sum(f.stat().st_size for f in entry.rglob("*") if f.is_file() and not f.is_symlink())
        else:
            total = entry.stat().st_size
        sizes.append((total, rel))
    return sorted(sizes, reverse=True)[:n]


def check_package_size(
    root: str | Path, excludes: Sequence[str] = DEFAULT_EXCLUDES, limit: int | None = None
) -> int:
    """The upload size in bytes; JobError naming the biggest entries if it reaches Ray's limit."""
    root = Path(root)
    limit = upload_limit_bytes() if limit is None else limit
    size = package_size(root, excludes)
    if size >= limit:
        biggest = ", ".join(f"{name} ({b / 2**20:.1f} MiB)" for b, name in _largest_entries(root, excludes))
        raise JobError(
            f"the project upload from {root} would be {size / 2**20:.1f} MiB zipped, over Ray's limit of "
            f"{limit / 2**20:.0f} MiB for a working_dir. Largest entries: {biggest}. Move data and "
            "checkpoints out of the project folder (or list them in .rayignore), and point the run at "
            "them with --set data.path=... / models.policy=..."
        )
    return size


# ---------------------------------------------------------------- the job


def _config_arg(config: str | None, root: Path) -> str | None:
    """A config as the job will see it: a path inside the upload (made relative), or a packaged
    name such as `micro`. A file outside the uploaded folder would not exist on the cluster."""
    if config is None:
        return None
    p = Path(config).expanduser()
    if p.is_file():
        try:
            return p.resolve().relative_to(root.resolve()).as_posix()
        except ValueError:
            raise JobError(
                f"config file {config} is outside the uploaded folder {root}, so the job could not read "
                "it: copy it under the project (e.g. configs/) or pass --working-dir"
            ) from None
    return config  # a packaged config name; load_config resolves it on both sides


def build_entrypoint(
    config: str | None = None,
    overrides: Sequence[str] = (),
    extra_args: Sequence[str] = (),
    python: str = "python",
) -> str:
    """The shell command the job runs: `python -m frft_ray.cli run [--config C] [--set k=v ...]`."""
    argv = [python, "-m", "frft_ray.cli", "run"]
    if config is not None:
        argv += ["--config", config]
    for o in overrides:
        argv += ["--set", o]
    argv += list(extra_args)
    return shlex.join(argv)


def build_runtime_env(
    root: str | Path,
    excludes: Sequence[str] = DEFAULT_EXCLUDES,
    offline: bool = True,
    env_vars: Mapping[str, str] | None = None,
    local_env: Mapping[str, str] | None = None,
) -> dict:
    """runtime_env for the job: the project as working_dir, and the environment a run needs."""
    local_env = os.environ if local_env is None else local_env
    env = {k: local_env[k] for k in PASSTHROUGH_ENV if k in local_env}
    env.update(JOB_ENV)
    if offline:
        env.update(HUB_OFFLINE_ENV)
    env.update(env_vars or {})
    leaked = sorted(set(env) & set(SECRET_ENV))
    if leaked:
        raise JobError(f"refusing to put {', '.join(leaked)} into the job's env: job env vars are readable by anyone who can list jobs")
    return {"working_dir": str(root), "excludes": list(excludes), "env_vars": env}


def submit(
    address: str,
    *,
    config: str | None = None,
    overrides: Sequence[str] = (),
    extra_args: Sequence[str] = (),
    entrypoint: str | None = None,
    working_dir: str | Path | None = None,
    excludes: Sequence[str] = DEFAULT_EXCLUDES,
    offline: bool = True,
    env_vars: Mapping[str, str] | None = None,
    submission_id: str | None = None,
    python: str = "python",
    validate: bool = True,
) -> str:
    """Submit a run (or any `entrypoint`) with the project as working_dir; returns the job id.

    The config and overrides are validated here first (`validate=False` skips it, for an
    entrypoint that is not a run). The upload size is checked before anything is sent.
    """
    root = Path(working_dir).resolve() if working_dir else project_root()
    if not root.is_dir():
        raise JobError(f"working dir {root} is not a folder")
    cfg_arg = _config_arg(config, root)
    if entrypoint is None:
        overrides = list(overrides)
        if validate:  # the user's overrides only, so an error names what they passed
            from frft_ray.config import load_config

            cfg_path = (root / cfg_arg) if cfg_arg and (root / cfg_arg).is_file() else cfg_arg
            load_config(cfg_path, list(overrides))  # ConfigError names the bad key
        if not any(o.split("=", 1)[0].strip() == "resources.address" for o in overrides):
            # Inside a job the run must join the job's cluster, not start its own local instance
            # (which could not fetch the job's working_dir package from its own GCS).
            overrides.append("resources.address=auto")
        entrypoint = build_entrypoint(cfg_arg, overrides, extra_args, python)
    check_package_size(root, excludes)
    runtime_env = build_runtime_env(root, excludes, offline, env_vars)
    client = make_client(address)
    try:
        return client.submit_job(entrypoint=entrypoint, runtime_env=runtime_env, submission_id=submission_id)
    except RuntimeError as e:  # the SDK raises RuntimeError with the server's reply
        raise JobError(f"job submission to {address} failed: {e}") from None


def status(address: str, job_id: str) -> tuple[str, str]:
    """(status name, message) of a job, e.g. ('SUCCEEDED', 'Job finished successfully.')."""
    client = make_client(address)
    try:
        info = client.get_job_info(job_id)
    except RuntimeError as e:
        raise JobError(f"no job {job_id!r} at {address}: {e}") from None
    return str(info.status), info.message or ""


def logs(address: str, job_id: str) -> str:
    """Everything the job's entrypoint has printed so far."""
    client = make_client(address)
    try:
        return client.get_job_logs(job_id)
    except RuntimeError as e:
        raise JobError(f"no logs for job {job_id!r} at {address}: {e}") from None


def stop(address: str, job_id: str) -> bool:
    """Ask the cluster to stop the job; False if it had already finished."""
    client = make_client(address)
    try:
        return bool(client.stop_job(job_id))
    except RuntimeError as e:
        raise JobError(f"cannot stop job {job_id!r} at {address}: {e}") from None


def wait(address: str, job_id: str, timeout_s: float = 3600.0, poll_s: float = 1.0, echo=None) -> str:
    """Poll until the job reaches a terminal state; returns it ('SUCCEEDED', 'FAILED', 'STOPPED').

    `echo`, if given, receives each new chunk of the job's log as it appears.
    """
    client = make_client(address)
    deadline = time.monotonic() + timeout_s
    shown = 0
    while True:
        st = client.get_job_status(job_id)
        if echo is not None:
            text = client.get_job_logs(job_id)
            if len(text) > shown:
                echo(text[shown:])
                shown = len(text)
        if st.is_terminal():
            return str(st)
        if time.monotonic() > deadline:
            raise JobError(f"job {job_id} still {st} after {timeout_s:.0f} s")
        time.sleep(poll_s)
