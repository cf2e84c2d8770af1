"""`frft-ray` command line. Each command group registers its own subparsers; this file only wires them.

Every command group is imported and registered explicitly: an import error in one is a real bug and
must fail loudly, not make its commands vanish. The cli_* modules keep torch and ray out of their
top level, so `frft-ray --help` stays fast.

User errors take one path: handlers (`cmd_<name>`) raise, `main` prints `frft-ray: error: <message>`
on stderr and returns 2 (see frft_ray/cli_common.py). Ctrl-C prints one line and returns 130.
"""

from __future__ import annotations

import argparse
import sys

from frft_ray import cli_cluster, cli_data, cli_run, cli_sweep
from frft_ray.cli_common import CLIError
from frft_ray.config import ConfigError
from frft_ray.data.records import BadRecordError
from frft_ray.env import apply_offline_defaults
from frft_ray.faults import RoleDiedError
from frft_ray.jobs import JobError
from frft_ray.run_state import RunStateError
from serve import cli as serve_cli

# Errors the user can fix; anything else is a bug and keeps its traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (CLIError, ConfigError, BadRecordError, FileNotFoundError,
                                                FileExistsError, JobError, RunStateError, RoleDiedError)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="frft-ray", description="Filtered Reward Fine-Tuning RLHF on Ray")
    sub = parser.add_subparsers(dest="command", required=True)
    for group in (cli_data, cli_run, cli_sweep, serve_cli, cli_cluster):
        group.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    apply_offline_defaults()  # the default run is offline: never let a hub lookup hang for ~47 s
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except USER_ERRORS as e:
        print(f"frft-ray: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C: the handler cleaned up on its way out; no traceback
        print(f"frft-ray: {args.command} interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
