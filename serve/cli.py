"""`frft-ray serve` (run the RM endpoint, or hot-swap it with --reload) and `frft-ray score` (a client).

User errors are raised (CLIError, FileNotFoundError, ConfigError) and reported by frft_ray.cli.main.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

from frft_ray.cli_common import CLIError, add_config_args

DEFAULT_STATE = Path("~/.cache/frft_ray/serve.json").expanduser()


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve the reward model over HTTP (blocks); --reload hot-swaps a running one")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", metavar="RUN_DIR", help="serve the RM of the run's latest iteration (RUN_DIR/latest)")
    src.add_argument("--checkpoint", metavar="PATH", help="serve this RM checkpoint folder")
    add_config_args(p, config_help="run config YAML whose `serve:` section to use (default: built-in defaults); "
                    "--set serve.KEY=VALUE overrides it")
    p.add_argument("--host", help="bind address (default 127.0.0.1; 0.0.0.0 exposes it to the network)")
    p.add_argument("--port", type=int, help="HTTP port of Serve's proxy (default 8000)")
    p.add_argument("--replicas", type=int, help="RM replicas (default 1)")
    p.add_argument("--version", type=int, help="version number to publish (default: meta.json's, else current + 1)")
    p.add_argument("--reload", action="store_true",
                   help="do not start a server: publish the checkpoint to the running one (hot swap, no restart)")
    p.add_argument("--address", help="Ray address of the running server for --reload (default: from --state-file)")
    p.add_argument("--app", help="Serve app to publish to with --reload (default: the one --state-file records, "
                   "else the --run folder's)")
    p.add_argument("--state-file", default=str(DEFAULT_STATE), help=f"where `serve` records its URL and Ray address (default {DEFAULT_STATE})")
    p.set_defaults(func=cmd_serve)

    s = sub.add_parser("score", help="score one (prompt, response) with a running endpoint")
    s.add_argument("prompt")
    s.add_argument("response")
    s.add_argument("--url", help="the endpoint's base URL, route prefix included, as `frft-ray serve` printed it "
                   "(default: the URL of the server --state-file records)")
    s.add_argument("--token", help="bearer token (default: $FRFT_RAY_TOKEN)")
    s.add_argument("--state-file", default=str(DEFAULT_STATE), help="where `serve` recorded its URL (for the default --url)")
    s.set_defaults(func=cmd_score)


def _checkpoint(args) -> Path:
    """The RM checkpoint to serve; FileNotFoundError (before Ray starts) when there is none."""
    from serve.launch import check_rm_checkpoint, rm_checkpoint_for_run

    return rm_checkpoint_for_run(args.run) if args.run else check_rm_checkpoint(args.checkpoint)


def _run_config(args):
    """The run config from --config/--set with --host/--port/--replicas applied to its `serve:`
    section, all validated: a bad flag fails here, before Ray starts, naming the flag."""
    from pydantic import ValidationError

    from frft_ray.config import RunConfig, ServeConfig, load_config

    # --set without --config overrides the packaged demo config, whose serve: section is the built-in defaults
    run_cfg = load_config(args.config, args.overrides) if args.config or args.overrides else RunConfig()
    flags = {k: v for k, v in (("host", args.host), ("port", args.port), ("replicas", args.replicas)) if v is not None}
    try:
        serve_cfg = ServeConfig.model_validate({**run_cfg.serve.model_dump(), **flags})
    except ValidationError as e:
        raise CLIError("; ".join(f"--{err['loc'][0]} {err['input']}: {err['msg']}" for err in e.errors())) from None
    return run_cfg.model_copy(update={"serve": serve_cfg})


def cmd_serve(args) -> int:
    if args.reload:  # a Ray 2.60 cluster wants its token from a connecting client; read before Ray starts up
        os.environ.setdefault("RAY_AUTH_MODE", "token")
    else:  # the Ray instance started below gets Serve's direct ingress (read once, as its processes start)
        from frft_ray.env import SERVE_INGRESS_ENV, apply_offline_defaults

        apply_offline_defaults(SERVE_INGRESS_ENV)
    import ray

    from serve import launch

    if args.reload:
        ckpt = _checkpoint(args)
        address, app = _reload_target(args)
        ray.init(address=address, log_to_driver=False)
        try:
            before = launch.current_version(app)
            entry = launch.publish_rm(ckpt, args.version, app_name=app)
        except (ValueError, LookupError) as e:  # a version that is not newer, no server app to publish to
            raise CLIError(f"serve --reload: {e}") from None
        if entry == before:
            print(f"{app} already serves RM version {entry['version']} from {entry['path']}; nothing to publish")
        else:
            print(f"published RM version {entry['version']} from {entry['path']} to {app}; replicas swap within ~1 s")
        return 0

    from frft_ray.phases import check_endpoint, ray_init

    run_cfg = _run_config(args)
    cfg, placement = run_cfg.serve, run_cfg.placement.serve
    check_endpoint(run_cfg)  # a token problem or a port in use fails before Ray starts
    ckpt = _checkpoint(args)
    # the app, registry and route are the served folder's: the run's own when --run (as `frft-ray run` names them)
    endpoint = launch.Endpoint.for_folder(args.run or ckpt)
    started = ray_init(run_cfg)  # as `frft-ray run` starts (or joins) Ray: the config's resources.* apply
    # after ray.init, whose core worker installs its own SIGTERM handler: `kill PID` now shuts down as Ctrl-C does
    signal.signal(signal.SIGTERM, _interrupt)
    wrote_state = False
    try:
        _check_placement(cfg, placement)
        url = launch.start_server(cfg, ckpt, args.version, app_name=endpoint.app_name,
                                  route_prefix=endpoint.route_prefix, placement=placement, precision=run_cfg.precision)
        direct = launch.replica_urls(endpoint.app_name)
        launch.write_state(args.state_file, url, app_name=endpoint.app_name, replica_urls=direct)
        wrote_state = True
        print(f"serving {ckpt}", flush=True)
        for line in launch.url_lines(url, direct):
            print(line, flush=True)
        print("Ctrl-C to stop", flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        launch.stop_server(endpoint.app_name)  # only ours: other apps on a shared cluster stay up
        if started:
            ray.shutdown()
        if wrote_state:  # never another server's record
            Path(args.state_file).unlink(missing_ok=True)
    return 0


def _reload_target(args) -> tuple[str, str]:
    """(Ray address, Serve app name) of the server `--reload` publishes to."""
    state_file = Path(args.state_file)
    state = _running_state(state_file) if not args.address else {}
    address = args.address or state.get("ray_address")
    if address is None:
        raise FileNotFoundError(f"no running server recorded in {state_file}; pass --address")
    app = args.app or (state.get("app_name") if not args.address else None)
    if app is None and args.run:
        from serve.launch import Endpoint

        app = Endpoint.for_folder(args.run).app_name
    if app is None:
        raise CLIError("serve --reload --address with --checkpoint: pass --app NAME (the app `frft-ray serve` printed)")
    return address, app


def _running_state(state_file: Path) -> dict:
    """What the running `frft-ray serve` recorded in `state_file`; {} when there is none. A record whose
    process is gone (killed with SIGKILL, or its machine restarted) is removed, with a warning, so no
    command waits on the dead server's Ray."""
    if not state_file.exists():
        return {}
    state = json.loads(state_file.read_text())
    pid = state.get("pid")
    try:
        if pid is not None:
            os.kill(pid, 0)
    except ProcessLookupError:
        state_file.unlink(missing_ok=True)
        print(f"frft-ray: warning: the server recorded in {state_file} (pid {pid}) is not running; record removed",
              file=sys.stderr)
        return {}
    except PermissionError:  # alive, another user's
        pass
    return state


def _check_placement(cfg, placement) -> None:
    """Fail in seconds (PlacementError, a user error) when the replicas can never be placed."""
    from frft_ray.config import PlacementConfig, RunConfig
    from frft_ray.placement_check import ensure_placement

    ensure_placement(RunConfig(serve=cfg, placement=PlacementConfig(serve=placement)), roles=("serve",))


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def cmd_score(args) -> int:
    """One score. Scoring has no side effects, so a connection error, a 408 (the proxy's
    `serve.request_timeout_s`) or a 5xx (a replica killed mid-request) is retried twice, at once and
    1 s later (urllib3's Retry); another 4xx is not."""
    import requests
    from requests.adapters import HTTPAdapter
    from urllib3.util import Retry

    url = args.url or _running_state(Path(args.state_file)).get("url")
    if url is None:
        raise CLIError(f"pass --url (no running server recorded in {args.state_file})")
    if not url.startswith(("http://", "https://")):
        raise CLIError(f"--url {url}: needs http:// or https:// in front")
    token = args.token or os.environ.get("FRFT_RAY_TOKEN")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    body = {"items": [{"prompt": args.prompt, "response": args.response}]}
    retry = Retry(total=2, backoff_factor=0.5, status_forcelist=(408, 500, 502, 503, 504), allowed_methods={"POST"},
                  raise_on_status=False)
    with requests.Session() as session:
        session.mount("http://", HTTPAdapter(max_retries=retry))
        session.mount("https://", HTTPAdapter(max_retries=retry))
        try:
            r = session.post(f"{url.rstrip('/')}/v1/score", json=body, headers=headers, timeout=60)
        except requests.RequestException as e:
            print(f"frft-ray score: no answer from {url} after 3 tries: {type(e).__name__}", file=sys.stderr)
            return 1
    if not r.ok:
        hint = (f" (POST {r.url}: is {url} the endpoint's base URL with its route prefix, as `frft-ray serve` "
                "printed it? /v1/score is added to it)" if r.status_code == 404 else "")
        print(f"frft-ray score: HTTP {r.status_code}: {r.text}{hint}", file=sys.stderr)
        return 1
    out = r.json()
    print(json.dumps({"score": out["scores"][0], "model_version": out["model_version"]}))
    return 0
