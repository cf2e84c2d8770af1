"""`frft-ray` command line. Each command group registers its own subparsers; this file only wires them."""

from __future__ import annotations

import argparse
import os
import sys


def _offline_defaults() -> None:
    """The default run is offline: never let a hub lookup hang for ~47 s."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="frft-ray", description="Filtered Reward Fine-Tuning RLHF on Ray")
    sub = parser.add_subparsers(dest="command", required=True)
    from frft_ray import cli_data

    cli_data.register(sub)
    try:
        from frft_ray import cli_run
    except ImportError:  # pipeline not installed in this checkout yet
        cli_run = None
    if cli_run is not None:
        cli_run.register(sub)
    try:
        from serve import cli as serve_cli
    except ImportError:
        serve_cli = None
    if serve_cli is not None:
        serve_cli.register(sub)
    try:
        from frft_ray import cli_cluster
    except ImportError:
        cli_cluster = None
    if cli_cluster is not None:
        cli_cluster.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    _offline_defaults()
    args = build_parser().parse_args(argv)
    from frft_ray.config import ConfigError
    from frft_ray.data.records import BadRecordError

    try:
        return int(args.func(args) or 0)
    except (ConfigError, BadRecordError, FileNotFoundError) as e:
        print(f"frft-ray: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
