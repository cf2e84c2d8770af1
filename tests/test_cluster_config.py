"""cluster.yaml passes the checks `ray up` runs before it makes any cloud call, and has the layout
the project relies on: rollout and learner GPU types that scale apart, CPU nodes for embedding
and Serve, custom resources that pin actors to a type, and the docker/ images on every node."""

from __future__ import annotations

import copy
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def raw() -> dict:
    return yaml.safe_load((ROOT / "cluster.yaml").read_text())


def _prepared(cfg: dict) -> dict:
    """What `ray up` does first: merge the provider defaults, then validate against ray-schema.json."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    full = prepare_config(copy.deepcopy(cfg))
    validate_config(full)
    return full


def test_validates_against_rays_own_schema(raw):
    full = _prepared(raw)
    assert full["provider"]["type"] == "aws"
    assert set(full["available_node_types"]) == {"head", "rollout_gpu", "learner_gpu", "cpu"}


def test_rollout_scales_apart_from_learner(raw):
    types = raw["available_node_types"]
    roll, learn, cpu = types["rollout_gpu"], types["learner_gpu"], types["cpu"]
    assert roll["resources"]["GPU"] >= 1 and learn["resources"]["GPU"] >= 1
    assert roll["resources"].get("rollout") == 1 and "learner" not in roll["resources"]
    assert learn["resources"].get("learner") == 1 and "rollout" not in learn["resources"]
    assert {"embed", "serve"} <= set(cpu["resources"]) and "GPU" not in cpu["resources"]
    assert roll["max_workers"] > learn["max_workers"], "rollout capacity should be able to outgrow the learner"
    assert raw["max_workers"] >= sum(t.get("max_workers", 0) for t in types.values())
    assert types["head"]["resources"]["CPU"] == 0, "the head runs no tasks"


def test_nodes_run_the_project_images(raw):
    assert raw["docker"]["image"].endswith("frft-ray:cpu")
    for name in ("rollout_gpu", "learner_gpu"):
        assert raw["available_node_types"][name]["docker"]["worker_image"].endswith("frft-ray:gpu")
    assert (ROOT / "docker" / "Dockerfile.gpu").is_file() and (ROOT / "docker" / "Dockerfile.cpu").is_file()
    starts = " ".join(raw["head_start_ray_commands"] + raw["worker_start_ray_commands"])
    assert starts.count("RAY_AUTH_MODE=token") == 2


def test_schema_rejects_a_broken_node_type(raw):
    """The check is not vacuous: a typo'd key or a fractional custom resource fails validation."""
    bad = copy.deepcopy(raw)
    bad["available_node_types"]["rollout_gpu"]["max_worker"] = 8
    with pytest.raises(jsonschema.ValidationError, match="max_worker"):
        _prepared(bad)
    bad = copy.deepcopy(raw)
    bad["available_node_types"]["rollout_gpu"]["resources"]["rollout"] = 0.5
    with pytest.raises(jsonschema.ValidationError):
        _prepared(bad)
