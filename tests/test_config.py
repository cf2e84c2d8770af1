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
    cfg = load_config(None, ["ppo.kl_coef=0.05", "frft.mode=vanilla", "ppo.adaptive_kl=false"])
    assert cfg.ppo.kl_coef == 0.05 and cfg.frft.mode == "vanilla" and cfg.ppo.adaptive_kl is False


def test_unknown_key_is_named_with_allowed_keys():
    with pytest.raises(ConfigError) as e:
        load_config(None, ["ppo.kl_cof=0.1"])
    assert "ppo.kl_cof" in str(e.value) and "kl_coef" in str(e.value)


def test_unknown_section_is_named():
    with pytest.raises(ConfigError, match="'bogus'"):
        config_from_dict({"bogus": {}})


def test_bad_value_names_key_and_allowed_values():
    with pytest.raises(ConfigError) as e:
        load_config(None, ["frft.mode=sometimes"])
    msg = str(e.value)
    assert "frft.mode" in msg and "vanilla" in msg and "sometimes" in msg


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
