"""The `placement:` table: one place for every role's CPUs, GPUs and custom resources."""

import pytest

from frft_ray.config import ROLES, ConfigError, PlacementConfig, config_from_dict, load_config


def test_every_role_has_a_placement_with_the_old_defaults():
    p = PlacementConfig()
    assert set(PlacementConfig.model_fields) == set(ROLES)
    assert (p.rollout.num_cpus, p.learner.num_cpus, p.reward_trainer.num_cpus, p.embedder.num_cpus,
            p.serve.num_cpus) == (1.0, 0.5, 1.0, 0.25, 0.25)
    assert all(getattr(p, r).num_gpus == 0 for r in ROLES)


def test_ray_options_and_bundles_name_only_what_is_asked():
    cfg = config_from_dict({"placement": {"rollout": {"num_cpus": 2, "num_gpus": 0.25, "resources": {"rollout": 0.01}},
                                          "embedder": {"num_cpus": 0.5}}})
    assert cfg.placement.rollout.bundle() == {"CPU": 2.0, "GPU": 0.25, "rollout": 0.01}
    assert cfg.placement.rollout.ray_options() == {"num_cpus": 2.0, "num_gpus": 0.25, "resources": {"rollout": 0.01}}
    assert cfg.placement.embedder.bundle() == {"CPU": 0.5}
    assert "resources" not in cfg.placement.embedder.ray_options()


def test_deprecated_keys_move_into_placement_with_a_warning():
    old = {"rollout": {"num_cpus": 0.3, "num_gpus": 0.5, "resources": {"rollout": 0.01}},
           "reward": {"num_cpus_per_worker": 2, "use_gpu": True},
           "resources": {"learner_num_cpus": 4, "learner_num_gpus": 1, "learner_resources": {"learner": 0.01}},
           "serve": {"num_cpus_per_replica": 0.75}}
    with pytest.warns(DeprecationWarning, match="rollout.num_cpus is deprecated; use placement.rollout.num_cpus"):
        cfg = config_from_dict(old)
    p = cfg.placement
    assert (p.rollout.num_cpus, p.rollout.num_gpus, p.rollout.resources) == (0.3, 0.5, {"rollout": 0.01})
    assert (p.reward_trainer.num_cpus, p.reward_trainer.num_gpus) == (2.0, 1.0)
    assert (p.learner.num_cpus, p.learner.num_gpus, p.learner.resources) == (4.0, 1.0, {"learner": 0.01})
    assert p.serve.num_cpus == 0.75
    assert old["rollout"] == {"num_cpus": 0.3, "num_gpus": 0.5, "resources": {"rollout": 0.01}}  # input untouched


def test_old_and_new_key_together_or_bad_values_fail_naming_the_key():
    with pytest.raises(ConfigError, match="keep only placement.rollout.num_cpus"):
        load_config("micro", ["rollout.num_cpus=0.5"])  # micro already sets placement.rollout.num_cpus
    with pytest.raises(ConfigError, match="reward.use_gpu: expected true or false"):
        config_from_dict({"reward": {"use_gpu": "yes"}})
    with pytest.raises(ConfigError, match="placement.learner.num_gpus"):
        config_from_dict({"placement": {"learner": {"num_gpus": -1}}})
    with pytest.raises(ConfigError, match="unknown config key 'placement.rolout'"):
        config_from_dict({"placement": {"rolout": {"num_cpus": 1}}})
