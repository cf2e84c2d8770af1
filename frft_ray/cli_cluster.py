"""`frft-ray submit` and `frft-ray jobs status|logs|stop`: runs on a Ray cluster through Ray Jobs.

Thin argparse layer over `frft_ray.jobs`; see docs/cluster.md for the whole workflow.
"""

from __future__ import annotations

import argparse
import os
import sys

from frft_ray.cli_common import CLIError, add_config_args


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
    add_config_args(s, config_help="a config file inside the project, or a packaged name (demo, micro)")
    s.add_argument("--no-wait", action="store_true", help="print the job id and return at once")
    s.add_argument("--offline", action=argparse.BooleanOptionalAction, default=True,
                   help="set HF_HUB_OFFLINE=1 and TRANSFORMERS_OFFLINE=1 in the job (default: on)")
    s.add_argument("--env", dest="env_vars", action="append", default=[], metavar="NAME=VALUE",
                   help="extra environment variable for the job, repeatable")
    s.add_argument("--working-dir", default=None, help="folder to upload (default: this project's checkout)")
    s.add_argument("--submission-id", default=None, help="job id to use instead of a generated one")
    s.add_argument("--python", default="python", help="python command on the cluster (default: python)")
    s.add_argument("--timeout", type=float, default=24 * 3600.0, help="seconds to wait for the job (default 1 day)")
    s.set_defaults(func=cmd_submit)

    j = sub.add_parser("jobs", help="status, logs or stop of a submitted job")
    jsub = j.add_subparsers(dest="jobs_command", required=True)
    for name, func, helptext in (
        ("status", cmd_jobs_status, "print the job's status and message"),
        ("logs", cmd_jobs_logs, "print the job's output so far"),
        ("stop", cmd_jobs_stop, "stop a running job"),
    ):
        p = jsub.add_parser(name, help=helptext)
        p.add_argument("job_id", type=_job_id, help="the id `frft-ray submit` printed (raysubmit_...)")
        _add_address(p)
        p.set_defaults(func=func)


def _parse_env(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        if "=" not in pair or not pair.split("=", 1)[0]:
            raise CLIError(f"--env {pair!r} must look like NAME=VALUE")
        k, v = pair.split("=", 1)
        out[k] = v
    return out


# Handlers raise JobError / ConfigError / CLIError; frft_ray.cli.main reports them (exit 2).


def cmd_submit(args: argparse.Namespace) -> int:
    from frft_ray import jobs

    job_id = jobs.submit(
        args.address,
        config=args.config,
        overrides=args.overrides,
        working_dir=args.working_dir,
        offline=args.offline,
        env_vars=_parse_env(args.env_vars),
        submission_id=args.submission_id,
        python=args.python,
    )
    print(job_id, flush=True)
    if args.no_wait:
        print(f"follow it with: frft-ray jobs logs {job_id} --address {args.address}", file=sys.stderr)
        return 0
    try:
        final = jobs.wait(args.address, job_id, timeout_s=args.timeout, echo=lambda t: print(t, end="", flush=True))
    except KeyboardInterrupt:  # Ctrl-C stops following, not the job
        print(f"\nfrft-ray: stopped following; job {job_id} keeps running on the cluster. Follow it again with "
              f"frft-ray jobs logs {job_id} --address {args.address}, stop it with frft-ray jobs stop {job_id} "
              f"--address {args.address}", file=sys.stderr)
        return 130
    print(f"job {job_id}: {final}", file=sys.stderr)
    return 0 if final == "SUCCEEDED" else 1


def _job_id(text: str) -> str:
    """argparse type: a job id is not empty (the jobs API would read "" as "list every job")."""
    if not text.strip():
        raise argparse.ArgumentTypeError("a job id is not empty: pass the id `frft-ray submit` printed")
    return text.strip()


def cmd_jobs_status(args: argparse.Namespace) -> int:
    from frft_ray import jobs

    st, msg = jobs.status(args.address, args.job_id)
    print(f"{st}\t{msg}" if msg else st)
    return 0


def cmd_jobs_logs(args: argparse.Namespace) -> int:
    from frft_ray import jobs

    print(jobs.logs(args.address, args.job_id), end="")
    return 0


def cmd_jobs_stop(args: argparse.Namespace) -> int:
    from frft_ray import jobs

    stopped = jobs.stop(args.address, args.job_id)
    print("stop requested" if stopped else "job had already finished")
    return 0
