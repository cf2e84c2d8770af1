"""Config keys that moved, accepted for one release with a warning naming the new key.

`config_from_dict` runs `migrate_placement_keys` and `migrate_frft_arms` on the raw mapping before
validation, so an old config file or `--set` override still loads, and the run's saved config.yaml has the new keys only.
"""

from __future__ import annotations

from frft_ray.config import ConfigError

# Keys that moved into `placement:` (accepted with a warning for one release): old dotted key -> (role, field).
DEPRECATED_PLACEMENT_KEYS = {
    "rollout.num_cpus": ("rollout", "num_cpus"),
    "rollout.num_gpus": ("rollout", "num_gpus"),
    "rollout.resources": ("rollout", "resources"),
    "reward.num_cpus_per_worker": ("reward_trainer", "num_cpus"),
    "reward.use_gpu": ("reward_trainer", "num_gpus"),
    "resources.learner_num_cpus": ("learner", "num_cpus"),
    "resources.learner_num_gpus": ("learner", "num_gpus"),
    "resources.learner_resources": ("learner", "resources"),
    "serve.num_cpus_per_replica": ("serve", "num_cpus"),
}


def migrate_placement_keys(data: dict) -> list[str]:
    """Move deprecated resource keys into `placement:` in place; returns one warning per key moved.

    `reward.use_gpu: true` becomes `placement.reward_trainer.num_gpus: 1` (what Ray Train asked for).
    Giving a deprecated key and its new key both is an error, so no setting silently wins.
    """
    warnings = []
    for old, (role, field) in DEPRECATED_PLACEMENT_KEYS.items():
        section, key = old.split(".")
        sec = data.get(section)
        if not isinstance(sec, dict) or key not in sec:
            continue
        value = sec.pop(key)
        if old == "reward.use_gpu":
            if not isinstance(value, bool):
                raise ConfigError(f"{old}: expected true or false (got {value!r})")
            value = 1.0 if value else 0.0
        new = f"placement.{role}.{field}"
        placement = data.setdefault("placement", {})
        if not isinstance(placement, dict) or not isinstance(placement.setdefault(role, {}), dict):
            raise ConfigError(f"placement.{role}: must be a mapping of num_cpus, num_gpus, resources")
        if field in placement[role]:
            raise ConfigError(f"{old} is deprecated and {new} is also set; keep only {new}")
        placement[role][field] = value
        warnings.append(f"config key {old} is deprecated; use {new} (accepted until the next release)")
    return warnings


def migrate_frft_arms(data: dict) -> list[str]:
    """Turn the deprecated `frft.mode` + `frft.compare_vanilla` into `frft.arms`, in place; returns the warnings.

    mode M with compare_vanilla true (its default) -> [vanilla, M]; with false, or M = vanilla -> [M];
    `random-refit` is spelled `random_refit` in the list. Old keys next to `frft.arms` are an error.
    """
    frft = data.get("frft")
    if not isinstance(frft, dict) or not ({"mode", "compare_vanilla"} & frft.keys()):
        return []
    old = [k for k in ("mode", "compare_vanilla") if k in frft]
    if "arms" in frft:
        raise ConfigError(f"frft.{' and frft.'.join(old)} are deprecated and frft.arms is also set; keep only frft.arms")
    mode, compare = frft.pop("mode", "frft"), frft.pop("compare_vanilla", True)
    if mode not in ("vanilla", "frft", "random-refit"):
        raise ConfigError(f"frft.mode (deprecated; use frft.arms): expected vanilla, frft or random-refit (got {mode!r})")
    if not isinstance(compare, bool):
        raise ConfigError(f"frft.compare_vanilla (deprecated; use frft.arms): expected true or false (got {compare!r})")
    arm = mode.replace("-", "_")
    frft["arms"] = ["vanilla", arm] if compare and arm != "vanilla" else [arm]
    given = ", ".join(f"frft.{k}" for k in old)
    return [f"config keys {given} are deprecated; use frft.arms: {frft['arms']} (accepted until the next release)"]
