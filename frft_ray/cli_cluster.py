"""`frft-ray submit` and `frft-ray jobs status|logs|stop`: runs on a Ray cluster through Ray Jobs.

Thin argparse layer over `frft_ray.jobs`; see docs/cluster.md for the whole workflow.
"""

from __future__ import annotations

import argparse
import os
import sys


def _default_address() -> str | None:
    return os.environ.get("RAY_API_SERVER_ADDRESS") or None


def _add_address(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--address",
        default=_default_address(),
        help="the cluster's dashboard, http://HEAD:8265 (default: $RAY_API_SERVER_ADDRESS)",
    )


def register(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser(
        "submit",
        help="submit a run to a Ray cluster as a Ray Job",
        description="Upload this project as the job's working_dir and run `frft-ray run` on the cluster.",
    )
    _add_address(s)
    s.add_argument("--config", default=None, help="a config file inside the project, or a packaged name (demo, micro)")
    s.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="config override, repeatable (e.g. --set ppo.kl_coef=0.05)")
    s.add_argument("--no-wait", action="store_true", help="print the job id and return at once")
    s.add_argument("--offline", action=argparse.BooleanOptionalAction, default=True,
                   help="set HF_HUB_OFFLINE=1 and TRANSFORMERS_OFFLINE=1 in the job (default: on)")
    s.add_argument("--env", dest="env_vars", action="append", default=[], metavar="NAME=VALUE",
                   help="extra environment variable for the job, repeatable")
    s.add_argument("--working-dir", default=None, help="folder to upload (default: this project's checkout)")
    s.add_argument("--submission-id", default=None, help="job id to use instead of a generated one")
    s.add_argument("--python", default="python", help="python command on the cluster (default: python)")
    s.add_argument("--timeout", type=float, default=24 * 3600.0, help="seconds to wait for the job (default 1 day)")
    s.set_defaults(func=submit_command)

    j = sub.add_parser("jobs", help="status, logs or stop of a submitted job")
    jsub = j.add_subparsers(dest="jobs_command", required=True)
    for name, func, helptext in (
        ("status", status_command, "print the job's status and message"),
        ("logs", logs_command, "print the job's output so far"),
        ("stop", stop_command, "stop a running job"),
    ):
        p = jsub.add_parser(name, help=helptext)
        p.add_argument("job_id", help="the id `frft-ray submit` printed (raysubmit_...)")
        _add_address(p)
        p.set_defaults(func=func)


def _parse_env(pairs: list[str]) -> dict[str, str]:
    from frft_ray.jobs import JobError

    out = {}
    for pair in pairs:
        if "=" not in pair or not pair.split("=", 1)[0]:
            raise JobError(f"--env {pair!r} must look like NAME=VALUE")
        k, v = pair.split("=", 1)
        out[k] = v
    return out


def _run(fn, args) -> int:
    """Run a command body; turn our errors into one clear line and exit status 2."""
    from frft_ray.jobs import JobError

    try:
        return fn(args)
    except JobError as e:
        print(f"frft-ray: error: {e}", file=sys.stderr)
        return 2


def submit_command(args: argparse.Namespace) -> int:
    from frft_ray import jobs

    def body(a):
        job_id = jobs.submit(
            a.address,
            config=a.config,
            overrides=a.overrides,
            working_dir=a.working_dir,
            offline=a.offline,
            env_vars=_parse_env(a.env_vars),
            submission_id=a.submission_id,
            python=a.python,
        )
        print(job_id, flush=True)
        if a.no_wait:
            print(f"follow it with: frft-ray jobs logs {job_id} --address {a.address}", file=sys.stderr)
            return 0
        final = jobs.wait(a.address, job_id, timeout_s=a.timeout, echo=lambda t: print(t, end="", flush=True))
        print(f"job {job_id}: {final}", file=sys.stderr)
        return 0 if final == "SUCCEEDED" else 1

    return _run(body, args)


def status_command(args: argparse.Namespace) -> int:
    from frft_ray import jobs

    def body(a):
        st, msg = jobs.status(a.address, a.job_id)
        print(f"{st}\t{msg}" if msg else st)
        return 0

    return _run(body, args)


def logs_command(args: argparse.Namespace) -> int:
    from frft_ray import jobs

    def body(a):
        print(jobs.logs(a.address, a.job_id), end="")
        return 0

    return _run(body, args)


def stop_command(args: argparse.Namespace) -> int:
    from frft_ray import jobs

    def body(a):
        stopped = jobs.stop(a.address, a.job_id)
        print("stop requested" if stopped else "job had already finished")
        return 0

    return _run(body, args)
