"""What each RM endpoint replica is started with: the `serve:` section as it is, plus what the
launcher derives (the bearer token's hash, never the token; the registry poll interval; the GPUs
`placement.serve` reserves per replica and the run's `precision`, from which the replica picks its
device and the dtype of its weights: frft_ray/devices.py).

The token comes from `serve.auth_token_file` when set, else from the env var `serve.auth_token_env`
names. A host other than loopback with no token is refused (`check_bind`) unless
`serve.allow_insecure: true`: the endpoint would score for anyone on the network.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from frft_ray.config import ConfigError, ServeConfig

POLL_S = 0.5


def resolve_token(cfg: ServeConfig, environ=None) -> str | None:
    """The bearer token: `auth_token_file`'s text when set (an unreadable or empty file is a ConfigError
    naming the key), else the value of env var `auth_token_env`; None when neither gives one."""
    if cfg.auth_token_file:
        path = Path(cfg.auth_token_file).expanduser()
        try:
            token = path.read_text().strip()
        except OSError as e:
            raise ConfigError(f"serve.auth_token_file: cannot read {path}: {e.strerror}") from None
        if not token:
            raise ConfigError(f"serve.auth_token_file: {path} is empty")
        return token
    environ = os.environ if environ is None else environ
    return (environ.get(cfg.auth_token_env) or "").strip() or None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: we cannot know where it resolves
        return False


def check_bind(cfg: ServeConfig, token: str | None) -> None:
    """Refuse to expose an endpoint without a token beyond loopback, unless `serve.allow_insecure`."""
    if token or cfg.allow_insecure or is_loopback(cfg.host):
        return
    raise ConfigError(
        f"serve.host={cfg.host} exposes the RM endpoint beyond this machine but no token is set: put one in the "
        f"file serve.auth_token_file names, or in the env var ${cfg.auth_token_env} (serve.auth_token_env), or set "
        "serve.allow_insecure=true to serve without auth on a trusted network")


def check_port_free(cfg: ServeConfig, wait_s: float = 2.0) -> None:
    """Refuse a `serve.port` another process listens on. Serve's proxy binds with SO_REUSEPORT, so a
    second Ray instance's proxy would share the port with the first and requests would land on
    either; a program that is not Ray makes Serve fail ~20 s later with a bind traceback. Call it
    where this machine is about to start Serve. A port still held after `wait_s` (a proxy that is
    shutting down lets go within ~1 s) is a ConfigError naming it."""
    host = "0.0.0.0" if cfg.host in ("", "0.0.0.0") else cfg.host
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    deadline = time.monotonic() + wait_s
    while True:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a closed socket's TIME_WAIT is no owner
            try:
                s.bind((host, cfg.port))
                return
            except OSError as e:
                if time.monotonic() > deadline:
                    raise ConfigError(f"serve.port {cfg.port} on {host} is in use by another process ({e.strerror}): "
                                      "stop it, or pick another port (--port, or --set serve.port=N)") from None
        time.sleep(0.2)


@dataclass(frozen=True)
class ReplicaSettings:
    serve: ServeConfig
    token_sha256: str | None = None  # SHA-256 of the bearer token; None = no auth
    poll_s: float = POLL_S  # how often a replica asks the version registry for a newer RM
    torch_threads: int = 1
    num_gpus: float = 0.0  # placement.serve.num_gpus: > 0 puts the replica's model on CUDA
    precision: str = "auto"  # the run's `precision`; the replica's dtype is devices.serve_dtype of it

    @classmethod
    def from_config(cls, cfg: ServeConfig, torch_threads: int = 1, num_gpus: float = 0.0,
                    precision: str = "auto") -> "ReplicaSettings":
        """Reads the token here in the launcher (`resolve_token`) and refuses an insecure bind (`check_bind`)."""
        token = resolve_token(cfg)
        check_bind(cfg, token)
        return cls(cfg, hashlib.sha256(token.encode()).hexdigest() if token else None, POLL_S, torch_threads,
                   num_gpus, precision)
