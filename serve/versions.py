"""The RM version registry: a named Ray actor that says which reward-model version is current.

Why an actor: re-running `serve.run` with a new `user_config` restarts replicas in Ray 2.60, and a
handle call reaches only one replica. Instead the driver (or `frft-ray serve --reload`) publishes
here and every replica polls `current()` (~0.5 s) and swaps in place. The registry refuses a
version that is not newer than the current one, so versions never go backwards.

Each endpoint has its own registry (`registry_name(app_name)`; a run's app is named after its
folder, `serve.launch.Endpoint`), so two runs on one cluster never share versions.

It is detached and lives in its own namespace, so replicas (namespace "serve") and a second
process (`--reload`) find it by name; `serve.launch.stop_server` kills it with the app.
"""

from __future__ import annotations

import time

import ray

NAMESPACE = "frft_ray"


def registry_name(app_name: str) -> str:
    return f"{app_name}_rm_versions"


@ray.remote(num_cpus=0, max_restarts=0)
class VersionRegistry:
    def __init__(self) -> None:
        self._history: list[dict] = []

    def publish(self, version: int, path: str, meta: dict | None = None) -> dict:
        """Make `path` the current RM as `version`; it must be newer than the current one, except that
        publishing the current (version, path) again is a no-op (a resume, a retried call)."""
        version = int(version)
        cur = self.current()
        if cur is not None and (version, str(path)) == (cur["version"], cur["path"]):
            return cur
        if cur is not None and version <= cur["version"]:
            raise ValueError(
                f"RM version {version} is not newer than the current version {cur['version']} "
                f"({cur['path']}); versions never go backwards"
            )
        entry = {"version": version, "path": str(path), "meta": dict(meta or {}), "published_at": time.time()}
        self._history.append(entry)
        return entry

    def current(self) -> dict | None:
        return self._history[-1] if self._history else None

    def history(self) -> list[dict]:
        return list(self._history)


def get_registry(app_name: str, create: bool = False):
    """The registry of app `app_name`; with create=True make it if missing (needs a Ray connection)."""
    name = registry_name(app_name)
    if create:
        return VersionRegistry.options(
            name=name, namespace=NAMESPACE, lifetime="detached", get_if_exists=True
        ).remote()
    try:
        return ray.get_actor(name, namespace=NAMESPACE)
    except ValueError:
        raise LookupError(
            f"no RM version registry {name!r} in this Ray cluster: is `frft-ray serve` (app {app_name!r}) running "
            "and is this process connected to its Ray cluster (--address)?"
        ) from None
