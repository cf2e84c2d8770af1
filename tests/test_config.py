import pytest

from frft_ray.config import ConfigError, RunConfig, config_from_dict, load_config


def test_demo_and_micro_configs_load():
    demo = load_config(None)
    assert isinstance(demo, RunConfig)
    micro = load_config("micro")
    assert micro.data.benchmark.pool_size <= demo.data.benchmark.pool_size
    assert micro.frft.alpha >= 1


def test_paper_config_loads():
    cfg = load_config("configs/hh-rlhf-gpt2-medium.yaml")
    assert cfg.models.policy == "gpt2-medium"
    assert cfg.data.format == "hh-rlhf"


def test_dotted_override_applies_and_parses_types():
    cfg = load_config(None, ["ppo.kl_coef=0.05", "frft.arms=[vanilla]", "ppo.adaptive_kl=false"])
    assert cfg.ppo.kl_coef == 0.05 and cfg.frft.arms == ["vanilla"] and cfg.ppo.adaptive_kl is False


def test_unknown_key_is_named_with_allowed_keys():
    with pytest.raises(ConfigError) as e:
        load_config(None, ["ppo.kl_cof=0.1"])
    assert "ppo.kl_cof" in str(e.value) and "kl_coef" in str(e.value)


def test_unknown_section_is_named():
    with pytest.raises(ConfigError, match="'bogus'"):
        config_from_dict({"bogus": {}})


def test_bad_value_names_key_and_allowed_values():
    with pytest.raises(ConfigError) as e:
        load_config(None, ["filter.strategy=sometimes"])
    msg = str(e.value)
    assert "filter.strategy" in msg and "chosen" in msg and "sometimes" in msg


def test_bad_number_range_named():
    with pytest.raises(ConfigError, match="filter.threshold"):
        load_config(None, ["filter.threshold=3"])


def test_cross_field_check_names_both_keys():
    with pytest.raises(ConfigError, match="ppo.minibatch_size"):
        load_config(None, ["ppo.batch_size=8", "ppo.minibatch_size=16"])


def test_path_required_for_file_formats():
    with pytest.raises(ConfigError, match="data.path"):
        load_config(None, ["data.format=hh-rlhf"])


def test_override_without_equals_is_rejected():
    with pytest.raises(ConfigError, match="key.sub=value"):
        load_config(None, ["ppo.kl_coef"])


def test_missing_file_is_named():
    with pytest.raises(ConfigError, match="nope.yaml"):
        load_config("nope.yaml")


def _undescribed_fields(model, prefix: str = "") -> list[str]:
    """Dotted names of every field under `model`, nested sections included, that has no description."""
    from pydantic import BaseModel

    missing = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        if not (field.description or "").strip():
            missing.append(key)
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            missing += _undescribed_fields(ann, f"{key}.")
    return missing


def test_every_config_field_has_a_description():
    missing = _undescribed_fields(RunConfig)
    assert not missing, f"config fields without description=: {', '.join(missing)}"


# --- frft.arms -------------------------------------------------------------------------------------


def test_arms_parse_and_train_in_a_fixed_order_with_fixed_seeds():
    from frft_ray.arm import arm_index, arms_of

    cfg = load_config("micro", ["frft.arms=[random_refit, oracle, frft, vanilla]"])
    assert cfg.frft.arms == ["random_refit", "oracle", "frft", "vanilla"]
    assert arms_of(cfg) == ["vanilla", "frft", "random_refit", "oracle"]  # random_refit after frft: it copies its sizes
    assert [arm_index(a) for a in arms_of(cfg)] == [0, 1, 2, 3]
    assert load_config(None).frft.arms == ["vanilla", "frft"]  # the default


@pytest.mark.parametrize("arms, fragment", [
    ("[]", "frft.arms"), ("[frft, frft]", "frft more than once"), ("[random-refit]", "random_refit"),
])
def test_bad_arms_are_named(arms, fragment):
    with pytest.raises(ConfigError) as e:
        load_config("micro", [f"frft.arms={arms}"])
    assert "frft.arms" in str(e.value) and fragment in str(e.value)


@pytest.mark.parametrize("fmt", ["hh-rlhf", "jsonl"])
def test_oracle_arm_on_file_data_is_a_clear_error(fmt):
    with pytest.raises(ConfigError) as e:
        load_config(None, [f"data.format={fmt}", "data.path=x.jsonl", "frft.arms=[vanilla, oracle]"])
    msg = str(e.value)
    assert "frft.arms" in msg and "oracle" in msg and "gold reward" in msg and fmt in msg and "data.format" in msg


@pytest.mark.parametrize("old, arms", [
    ({"mode": "frft"}, ["vanilla", "frft"]),
    ({"mode": "random-refit", "compare_vanilla": True}, ["vanilla", "random_refit"]),
    ({"mode": "random-refit", "compare_vanilla": False}, ["random_refit"]),
    ({"mode": "vanilla"}, ["vanilla"]),
    ({"compare_vanilla": False}, ["frft"]),
])
def test_deprecated_mode_and_compare_vanilla_map_onto_arms_with_a_warning(old, arms):
    with pytest.warns(DeprecationWarning, match="frft.arms") as w:
        cfg = config_from_dict({"frft": {**old, "alpha": 1}})
    assert cfg.frft.arms == arms and cfg.frft.alpha == 1
    assert all(f"frft.{k}" in str(w[0].message) for k in old)
    assert "mode" not in cfg.frft.model_dump()  # a saved config.yaml has the new key only


def test_deprecated_arm_keys_beside_arms_or_with_bad_values_are_errors():
    with pytest.raises(ConfigError, match="frft.mode are deprecated and frft.arms is also set"):
        config_from_dict({"frft": {"mode": "frft", "arms": ["frft"]}})
    with pytest.raises(ConfigError, match="frft.mode .*sometimes"):
        config_from_dict({"frft": {"mode": "sometimes"}})
