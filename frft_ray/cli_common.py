"""What every `frft-ray` command group shares: the user-error type and the --config/--set flags.

Error reporting has one path: a handler raises `CLIError(message)` (or ConfigError, BadRecordError,
FileNotFoundError, JobError, which mean the same) and `frft_ray.cli.main` prints
`frft-ray: error: <message>` on stderr and exits 2. Handlers never print errors themselves.

Keep this module light (no torch, no ray): every command registers through it on `frft-ray --help`.
"""

from __future__ import annotations

import argparse

CONFIG_HELP = "YAML file or packaged name (demo, micro); default: demo"


class CLIError(Exception):
    """A user error on the command line; the message says what to change. Exit status 2."""


def add_config_args(p: argparse.ArgumentParser, config_help: str = CONFIG_HELP) -> None:
    """The shared `--config FILE` and repeatable `--set KEY=VALUE` flags (args.config, args.overrides),
    for `frft_ray.config.load_config(args.config, args.overrides)`."""
    p.add_argument("--config", default=None, help=config_help)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set ppo.kl_coef=0.05 (repeatable)")
