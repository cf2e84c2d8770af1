"""Loading a run config: YAML file or packaged name, `--set` overrides, migrations, errors that name the key.

The schema itself is frft_ray/config.py, which re-exports these names (`from frft_ray.config import
load_config` keeps working); `RunConfig` is imported inside the functions because config.py imports
this module at its end.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

PACKAGE_CONFIGS = Path(__file__).resolve().parent.parent / "configs"  # the repo's configs/


class ConfigError(ValueError):
    """A config file or override is wrong; the message names the key."""


def _format_validation_error(err: ValidationError, origin: str) -> str:
    lines = [f"invalid config ({origin}):"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "<root>"
        if e["type"] == "extra_forbidden":
            lines.append(f"  {key}: unknown key")
        else:
            lines.append(f"  {key}: {e['msg']} (got {e.get('input')!r})")
    return "\n".join(lines)


def _parse_value(text: str) -> Any:
    """`--set` values are YAML scalars: 0.05, true, null, [1, 2], 'text'."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_override(data: dict, dotted: str) -> None:
    if "=" not in dotted:
        raise ConfigError(f"override {dotted!r} must look like key.sub=value")
    key, raw = dotted.split("=", 1)
    parts = key.strip().split(".")
    node = data
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {key!r}: {'.'.join(parts[: i + 1])} is not a section")
        node = child
    node[parts[-1]] = _parse_value(raw)


def _check_known_keys(data: dict, model: type[BaseModel], prefix: str = "") -> None:
    """Name unknown keys with the allowed ones (pydantic alone does not list them)."""
    for key, value in data.items():
        field = model.model_fields.get(key)
        if field is None:
            allowed = ", ".join(sorted(model.model_fields))
            raise ConfigError(f"unknown config key '{prefix}{key}'; allowed here: {allowed}")
        ann = field.annotation
        if isinstance(value, dict) and isinstance(ann, type) and issubclass(ann, BaseModel):
            _check_known_keys(value, ann, f"{prefix}{key}.")


def resolve_config_path(path: str | Path | None) -> Path:
    """None -> the embedded demo config; a bare name like 'micro' -> the packaged configs/micro.yaml."""
    if path is None:
        return PACKAGE_CONFIGS / "demo.yaml"
    p = Path(path)
    if p.exists():
        return p
    packaged = PACKAGE_CONFIGS / (p.name if p.suffix else f"{p.name}.yaml")
    if packaged.exists():
        return packaged
    raise ConfigError(f"config file not found: {path}")


def read_yaml_mapping(path: Path, what: str) -> dict:
    """A YAML file whose top level is a mapping ({} when empty); ConfigError naming the file otherwise.
    `what` says what the mapping holds, for the message."""
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of {what}")
    return data


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> "RunConfig":
    cfg_path = resolve_config_path(path)
    data = read_yaml_mapping(cfg_path, "sections")
    for o in overrides or []:
        apply_override(data, o)
    # an error names the file and the overrides on top of it: a bad --set is not the file's fault
    origin = f"{cfg_path} with --set {' '.join(overrides)}" if overrides else str(cfg_path)
    return config_from_dict(data, origin=origin)


def config_from_dict(data: dict, origin: str = "dict") -> "RunConfig":
    import copy
    import warnings

    from frft_ray.config import RunConfig

    data = copy.deepcopy(data)
    from frft_ray.config_migrations import migrate_frft_arms, migrate_placement_keys

    for message in migrate_placement_keys(data) + migrate_frft_arms(data):
        warnings.warn(message, DeprecationWarning, stacklevel=2)
        logging.getLogger("frft_ray").warning(message)
    _check_known_keys(data, RunConfig)
    try:
        return RunConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_validation_error(e, origin)) from None


def dump_config(cfg: "RunConfig", path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
