"""The offline environment defaults, defined once for every process frft-ray starts.

A run is offline by default: a Hugging Face hub lookup with no network hangs for ~47 s before it
fails, so every process sets the hub's offline switches unless the user set them already.
The Makefile, .ci/run, scripts/gpu_check.sh and the Docker images set the same variables in shell;
keep them in step with this file.

- `HUB_OFFLINE_ENV`: never contact the hub (what `frft-ray submit --offline` puts into a job).
- `OFFLINE_ENV`: that plus quiet hub downloads and tokenizers (what the `frft-ray` CLI sets).
- `ACTOR_ENV`: that plus no tqdm bars at all (what every Ray actor sets: their bars only clutter
  the driver's log). The CLI leaves tqdm alone so `frft-ray data stats` can show its progress.
- `SERVE_INGRESS_ENV`: Ray Serve's direct ingress (each RM replica answers HTTP on its own port, no
  proxy hop) and its throughput preset (the replica runs our code on its own event loop instead of
  a second thread's), with replica log lines written as they come; docs/serve.md. Ray reads it once per process, when Serve's processes start, so it is
  set before every `ray.init` that starts a local instance; a cluster needs it at `ray start`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping

HUB_OFFLINE_ENV: dict[str, str] = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
OFFLINE_ENV: dict[str, str] = {
    **HUB_OFFLINE_ENV,
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TOKENIZERS_PARALLELISM": "false",
}
ACTOR_ENV: dict[str, str] = {**OFFLINE_ENV, "TQDM_DISABLE": "1"}
SERVE_INGRESS_ENV: dict[str, str] = {
    "RAY_SERVE_ENABLE_DIRECT_INGRESS": "1",
    # Ray's preset: user code on the replica's own loop (one thread hop less per request), replica
    # logs to their files only (not stderr); docs/serve.md has the numbers
    "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
    # ...but the preset also holds replica log lines until 1,000 pile up (flushing only on errors);
    # with the access log off (serve.access_log) that buys nothing and hides the hot-swap lines
    "RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE": "1",
    # a stopping replica keeps its port open this long for load balancers (Ray's default: 30 s);
    # a local instance has none in front, and 30 s would stall every shutdown
    "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "2",
}


def apply_offline_defaults(
    defaults: Mapping[str, str] = OFFLINE_ENV, environ: MutableMapping[str, str] | None = None
) -> None:
    """Set each of `defaults` in `environ` (default: os.environ) unless it is set already."""
    environ = os.environ if environ is None else environ
    for key, value in defaults.items():
        environ.setdefault(key, value)
