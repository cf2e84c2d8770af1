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


# ---- the start check: frft_ray/placement_check.py, against plain resource tables

from pathlib import Path  # noqa: E402

import yaml  # noqa: E402

from frft_ray.placement_check import (  # noqa: E402
    ClusterOffer,
    PlacementError,
    check_placement,
    nodes_from_node_types,
    placement_error,
)

ONE_GPU_NODE = {"CPU": 16, "GPU": 1, "memory": 100e9, "object_store_memory": 20e9}
PAPER_CLUSTER = [{"CPU": 96, "GPU": 8}, {"CPU": 96, "GPU": 8}]  # what configs/hh-rlhf-gpt2-medium.yaml states
REPO = Path(__file__).resolve().parent.parent


def micro(*overrides):
    return load_config("micro", list(overrides))


def test_roles_that_fit_give_no_problems():
    assert check_placement(micro(), [{"CPU": 2}]) == []
    assert check_placement(micro("placement.learner.num_gpus=0.5", "placement.rollout.num_gpus=0.5"), [ONE_GPU_NODE]) == []


def test_a_unit_bigger_than_any_node_names_the_role_what_it_asks_and_the_fix():
    (msg,) = check_placement(micro("placement.learner.num_gpus=2"), [ONE_GPU_NODE, {"CPU": 8}])
    assert msg.startswith("learner: one unit asks {CPU: 0.5, GPU: 2}")
    assert "1 x {CPU: 16, GPU: 1}, 1 x {CPU: 8, GPU: 0}" in msg  # what the cluster offers
    assert "--set placement.learner.num_gpus=1" in msg


def test_the_h200_case_reward_trainer_whole_gpu_beside_fractions_fails_with_the_sum():
    cfg = micro("placement.learner.num_gpus=0.25", "placement.rollout.num_gpus=0.25", "placement.reward_trainer.num_gpus=1")
    (msg,) = check_placement(cfg, [ONE_GPU_NODE])
    assert "together they ask GPU 1.5" in msg and "offers GPU 1" in msg
    assert "reward_trainer 1 unit (reward.num_workers=1) x {CPU: 0.5, GPU: 1}" in msg
    assert "--set placement.reward_trainer.num_gpus=0.5" in msg  # the biggest asker gets the fix


def test_units_that_add_up_past_the_cpus_suggest_a_share_or_fewer_units():
    (msg,) = check_placement(micro("rollout.num_workers=20"), [{"CPU": 4}])
    assert "together they ask CPU 6.25" in msg and "rollout 20 units (rollout.num_workers=20)" in msg
    assert "--set placement.rollout.num_cpus=0.13 or --set rollout.num_workers=11" in msg
    assert check_placement(micro("rollout.num_workers=11"), [{"CPU": 4}]) == []  # the suggested fix fits


def test_a_custom_resource_no_node_has_is_named():
    (msg,) = check_placement(micro("placement.rollout.resources={rollout: 0.01}"), [ONE_GPU_NODE])
    assert msg.startswith("rollout: one unit asks {CPU: 0.25, rollout: 0.01}")
    assert "add 'rollout' to a node type" in msg
    nodes = [ONE_GPU_NODE, {"CPU": 4, "rollout": 1}]
    assert check_placement(micro("placement.rollout.resources={rollout: 0.01}"), nodes) == []


def test_fractional_gpus_share_a_card_and_may_not_add_past_one():
    three = ["placement.learner.num_gpus=0.4", "placement.rollout.num_gpus=0.4", "placement.reward_trainer.num_gpus=0.4"]
    (msg,) = check_placement(micro(*three), [ONE_GPU_NODE])
    assert "together they ask GPU 1.2" in msg
    assert check_placement(micro(*three), [{"CPU": 16, "GPU": 2}]) == []  # 0.4 + 0.4 on one card, 0.4 on the other
    # 3 x 0.6 is 1.8 <= 2 cards in all, but no card holds two of them: placed per card, as Ray does
    sixes = [s.replace("0.4", "0.6") for s in three]
    msgs = check_placement(micro(*sixes), [{"CPU": 16, "GPU": 2}])
    assert len(msgs) == 1 and "although the totals fit" in msgs[0] and "add up to at most 1" in msgs[0]


def test_only_the_roles_a_run_keeps_are_counted():
    # the embedder only when an arm filters, Serve only when enabled (up to its autoscaling maximum)
    assert check_placement(micro("frft.arms=[vanilla, oracle]", "placement.embedder.num_gpus=1"), [ONE_GPU_NODE]) == []
    assert check_placement(micro("placement.serve.num_gpus=1"), [ONE_GPU_NODE]) == []
    (msg,) = check_placement(micro("serve.enabled=true", "serve.autoscale_max_replicas=3", "placement.serve.num_gpus=0.5"),
                             [ONE_GPU_NODE])
    assert "serve 3 units (serve.autoscale_max_replicas=3)" in msg


def test_gpu1_config_fits_one_gpu_node_with_serve_too():
    cfg = load_config("gpu-1")
    p = cfg.placement
    assert all(getattr(p, r).num_gpus > 0 for r in ROLES)
    assert check_placement(cfg, [{"CPU": 16, "GPU": 1}]) == []
    assert check_placement(load_config("gpu-1", ["serve.enabled=true"]), [{"CPU": 16, "GPU": 1}]) == []
    assert check_placement(load_config("gpu-1", ["rollout.num_workers=2"]), [{"CPU": 16, "GPU": 1}])  # no slack


def test_paper_config_fits_its_stated_cluster_and_not_one_gpu_node():
    cfg = load_config("hh-rlhf-gpt2-medium")
    assert all(getattr(cfg.placement, r).num_gpus > 0 for r in ROLES)
    assert check_placement(cfg, PAPER_CLUSTER) == []
    msgs = check_placement(cfg, [{"CPU": 16, "GPU": 1}])
    gpu = next(m for m in msgs if m.startswith("learner, rollout, reward_trainer, embedder, serve: together they ask GPU 12"))
    assert "offers GPU 1 (1 x {CPU: 16, GPU: 1})" in gpu and "use a bigger cluster" in gpu
    err = placement_error(cfg, ClusterOffer([{"CPU": 16, "GPU": 1}], None))
    assert isinstance(err, PlacementError) and "taken as it is" in str(err)


def test_an_autoscaler_maximum_counts_nodes_not_up_yet():
    cfg = load_config("hh-rlhf-gpt2-medium")
    head_only = [{"CPU": 8}]
    most = nodes_from_node_types([({"CPU": 8}, 1), ({"CPU": 96, "GPU": 8}, 2)], unlimited=4)
    assert placement_error(cfg, ClusterOffer(head_only, most)) is None  # the autoscaler can start the GPU nodes
    unlimited = nodes_from_node_types([({"CPU": 8}, 1), ({"CPU": 8, "GPU": 1}, -1), ({"CPU": 4}, 0)], unlimited=16)
    assert len(unlimited) == 17 and placement_error(cfg, ClusterOffer(head_only, unlimited)) is None
    small = nodes_from_node_types([({"CPU": 8}, 1), ({"CPU": 96, "GPU": 8}, 1)], unlimited=4)
    err = placement_error(cfg, ClusterOffer(head_only, small))
    assert "even with every autoscaler node type at its max count" in str(err) and "GPU 12" in str(err)


def test_cluster_md_placement_fits_cluster_yaml_node_types():
    """docs/cluster.md's placement block, on the paper config, fits cluster.yaml's node types at max counts."""
    doc = (REPO / "docs" / "cluster.md").read_text()
    block = next(b for b in doc.split("```yaml\n")[1:] if b.startswith("placement:")).split("```")[0]
    data = yaml.safe_load((REPO / "configs" / "hh-rlhf-gpt2-medium.yaml").read_text())
    data.update(yaml.safe_load(block))
    launcher = yaml.safe_load((REPO / "cluster.yaml").read_text())
    types = launcher["available_node_types"]
    groups = [(t["resources"], 1 if name == launcher["head_node_type"] else t["max_workers"]) for name, t in types.items()]
    nodes = nodes_from_node_types(groups, unlimited=0)
    assert check_placement(config_from_dict(data), nodes) == []


# ---- the hook, on the session's real Ray (2 CPUs, no GPU)


def test_cluster_offer_reads_the_local_ray(ray_local):
    from frft_ray.placement_check import cluster_offer

    offer = cluster_offer()
    assert [n["CPU"] for n in offer.alive] == [2.0] and all(n.get("GPU", 0) == 0 for n in offer.alive)
    assert offer.maximum is None  # a local instance has no autoscaler to report node types


def test_run_asking_a_gpu_fails_at_start_naming_the_learner(ray_local, tmp_path, capsys):
    import time

    from frft_ray.cli import main

    t0 = time.monotonic()
    code = main(["run", "--config", "micro", "--out", str(tmp_path / "run"), "--set", "placement.learner.num_gpus=1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith("frft-ray: error: the placement: section cannot fit this cluster (checked against the 1 "
                              "node(s) up now")
    assert "learner: one unit asks {CPU: 0.5, GPU: 1}" in err[-1] and "--set placement.learner.num_gpus=0" in err[-1]
    assert list((tmp_path / "run" / "ckpt").iterdir()) == []  # nothing was built: it failed before any role started
    assert time.monotonic() - t0 < 60  # fails fast rather than waiting on Ray (a loose bound, not a benchmark)
    assert ray_local.is_initialized()  # the session's Ray is not ours to stop


def test_serve_replicas_are_checked_before_serve_starts(ray_local):
    from frft_ray.config import ServeConfig
    from serve.cli import _check_placement

    _check_placement(ServeConfig(replicas=2), load_config("micro").placement.serve)  # 2 x 0.25 CPU fits
    with pytest.raises(PlacementError, match=r"serve: one unit asks \{CPU: [\d.]+, GPU: 0.5\}"):
        _check_placement(ServeConfig(), load_config("micro", ["placement.serve.num_gpus=0.5"]).placement.serve)


def test_a_role_given_in_part_keeps_its_other_defaults():
    """`--set placement.learner.num_gpus=1` changes the GPUs only, not the learner's own CPU default."""
    cfg = micro("placement.learner.num_gpus=1", "placement.serve.resources={serve: 0.01}")
    assert (cfg.placement.learner.num_cpus, cfg.placement.learner.num_gpus) == (0.5, 1.0)
    assert (cfg.placement.serve.num_cpus, cfg.placement.serve.resources) == (0.25, {"serve": 0.01})


def test_sft_and_the_initial_rm_overlap_only_where_their_threads_fit(ray_local):
    """resources.overlap_base_models=auto on the tests' 2-CPU Ray: micro's 1-thread roles fit, the demo's
    2 threads each do not, unset threads do not; GPUs for both roles always do; true/false win."""
    from frft_ray.phases import overlap_base_models

    assert overlap_base_models(load_config("micro"))
    assert not overlap_base_models(load_config("demo"))
    assert not overlap_base_models(load_config("micro", ["resources.torch_threads=null"]))
    assert not overlap_base_models(load_config("micro", ["reward.num_workers=2"]))
    assert overlap_base_models(load_config("demo", ["placement.learner.num_gpus=0.5",
                                                    "placement.reward_trainer.num_gpus=0.25"]))
    assert overlap_base_models(load_config("demo", ["resources.overlap_base_models=true"]))
    assert not overlap_base_models(load_config("micro", ["resources.overlap_base_models=false"]))
    with pytest.raises(ConfigError, match="overlap_base_models"):
        load_config("micro", ["resources.overlap_base_models=sometimes"])
