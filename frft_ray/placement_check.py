"""Can the run's roles ever be placed on this cluster? Checked at start, so a run that never could
fails in seconds naming the role and the shortfall instead of waiting (Ray Train, for one, retries
an unplaceable worker group every 60 s without end).

Every role lives for the whole run (frft_ray/workers.py), so their needs add up:

    learner         1 unit                              placement.learner
    rollout         rollout.num_workers bundles          placement.rollout   (one placement group)
    reward_trainer  reward.num_workers Ray Train workers placement.reward_trainer
    embedder        filter.num_embedders actors          placement.embedder  (only when an arm filters)
    serve           serve.replicas (autoscale max)      placement.serve     (only when serve.enabled)

`check_placement(cfg, nodes)` is pure: it bin-packs every unit onto `nodes` (per-node resource
dicts such as `{"CPU": 16, "GPU": 1}`), first-fit decreasing, and returns one message per role
that does not fit. GPUs are packed per card the way Ray does it: a fraction must fit in what one
card has left, so three 0.4 units do not fit one card even though 1.2 < 2 cards would. A custom
resource a role names must be on the node that takes it.

`ensure_placement(cfg)` (the hook, after `ray.init`) checks against the alive nodes and, where an
autoscaler reported its node types, against those at their max counts: the same source Ray Train
V2 reads before it waits for a worker group (`ray._private.state.state.get_cluster_config()`).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Iterable

from frft_ray.config import ConfigError, RunConfig

# How each role's units may spread over nodes: the rollout pool's placement group
# (actors/rollout_pool.py uses this constant) and Ray Train's ScalingConfig default.
ROLLOUT_STRATEGY = "PACK"
RM_TRAINER_STRATEGY = "PACK"
_EPS = 1e-6


class PlacementError(ConfigError):
    """The run's placement can never fit the cluster; the message names each role and the fix."""


@dataclass(frozen=True)
class RoleDemand:
    """`count` units of `role`, each asking `unit` (a Ray bundle), spread by `strategy`."""

    role: str
    count: int
    unit: dict[str, float]
    count_key: str = ""  # the config key that sets `count` ("" for the one learner)
    strategy: str = "PACK"  # PACK/SPREAD: any nodes; STRICT_PACK: one node; STRICT_SPREAD: distinct nodes


def run_demands(cfg: RunConfig, roles: Iterable[str] | None = None) -> list[RoleDemand]:
    """What a whole run keeps placed (`roles` narrows it, e.g. ("serve",) for `frft-ray serve`)."""
    from frft_ray.arm import arms_of

    p = cfg.placement
    serve_n, serve_key = cfg.serve.replicas, "serve.replicas"
    if cfg.serve.autoscale_max_replicas and cfg.serve.autoscale_max_replicas > serve_n:
        serve_n, serve_key = cfg.serve.autoscale_max_replicas, "serve.autoscale_max_replicas"
    all_roles = [
        RoleDemand("learner", 1, p.learner.bundle()),
        RoleDemand("rollout", cfg.rollout.num_workers, p.rollout.bundle(), "rollout.num_workers", ROLLOUT_STRATEGY),
        RoleDemand("reward_trainer", cfg.reward.num_workers, p.reward_trainer.bundle(), "reward.num_workers",
                   RM_TRAINER_STRATEGY),
        RoleDemand("embedder", cfg.filter.num_embedders, p.embedder.bundle(), "filter.num_embedders"),
        RoleDemand("serve", serve_n, p.serve.bundle(), serve_key),
    ]
    if roles is None:
        roles = {"learner", "rollout", "reward_trainer"}
        roles |= {"embedder"} if "frft" in arms_of(cfg) else set()
        roles |= {"serve"} if cfg.serve.enabled else set()
    return [d for d in all_roles if d.role in set(roles)]


class _Node:
    """What one node has left: GPUs per card, everything else as plain amounts."""

    def __init__(self, resources: dict[str, float]):
        gpus = float(resources.get("GPU", 0))
        self.cards = [1.0] * int(gpus + _EPS) + ([gpus % 1] if gpus % 1 > _EPS else [])
        self.free = {k: float(v) for k, v in resources.items() if k != "GPU"}

    def _gpu_pick(self, want: float) -> list[int] | None:
        if want <= 1 + _EPS:  # a fraction (or one card): the fullest card that still has room
            fits = [i for i, c in enumerate(self.cards) if c + _EPS >= want]
            return [min(fits, key=lambda i: self.cards[i])] if fits else None
        whole = [i for i, c in enumerate(self.cards) if c >= 1 - _EPS]
        return whole[: math.ceil(want - _EPS)] if len(whole) >= math.ceil(want - _EPS) else None

    def take(self, unit: dict[str, float]) -> bool:
        """Reserve `unit` here if it fits; True when it did."""
        if any(self.free.get(k, 0.0) + _EPS < v for k, v in unit.items() if k != "GPU" and v > 0):
            return False
        gpu = unit.get("GPU", 0.0)
        cards = self._gpu_pick(gpu) if gpu > 0 else []
        if cards is None:
            return False
        for i in cards:
            self.cards[i] -= min(gpu, 1.0)
        for k, v in unit.items():
            if k != "GPU":
                self.free[k] = self.free.get(k, 0.0) - v
        return True


def _pack(demands: list[RoleDemand], nodes: list[dict]) -> Counter:
    """First-fit decreasing; returns how many units of each role found no room."""
    units = []
    for d in demands:
        if d.strategy == "STRICT_PACK":  # the whole group on one node
            units.append((d, {k: v * d.count for k, v in d.unit.items()}))
        else:
            units.extend((d, d.unit) for _ in range(d.count))
    units.sort(key=lambda u: (u[1].get("GPU", 0), sum(v for k, v in u[1].items() if k not in ("CPU", "GPU")),
                              u[1].get("CPU", 0)), reverse=True)
    free = [_Node(n) for n in nodes]
    used: dict[str, set[int]] = {}  # STRICT_SPREAD: nodes a role already holds
    failed: Counter = Counter()
    for d, unit in units:
        taken = used.setdefault(d.role, set()) if d.strategy == "STRICT_SPREAD" else set()
        spot = next((i for i, n in enumerate(free) if i not in taken and n.take(unit)), None)
        if spot is None:
            failed[d.role] += d.count if d.strategy == "STRICT_PACK" else 1
        elif d.strategy == "STRICT_SPREAD":
            taken.add(spot)
    return failed


def _fmt(res: dict[str, float]) -> str:
    return "{" + ", ".join(f"{k}: {v:g}" for k, v in res.items()) + "}"


def describe_nodes(nodes: list[dict], keys: Iterable[str] = ("CPU", "GPU")) -> str:
    """'2 x {CPU: 96, GPU: 8}': the node shapes, limited to the resources the run asks for."""
    keys = list(dict.fromkeys(keys))
    shapes = Counter(tuple((k, float(n.get(k, 0))) for k in keys) for n in nodes)
    if not shapes:
        return "no nodes"
    return ", ".join(f"{c} x {_fmt(dict(s))}" for s, c in shapes.items())


def _how_many(d: RoleDemand) -> str:
    return f"{d.count} unit{'s' if d.count > 1 else ''}" + (f" ({d.count_key}={d.count})" if d.count_key else "")


def _lone_problem(d: RoleDemand, nodes: list[dict], offer: str) -> str | None:
    """The message when one unit of `d` fits no node even on an empty cluster, else None."""
    unit = {k: v * d.count for k, v in d.unit.items()} if d.strategy == "STRICT_PACK" else d.unit
    if any(not _pack([RoleDemand(d.role, 1, unit)], [n]) for n in nodes):
        return None
    fixes = []
    for k, v in unit.items():
        most = max((float(n.get(k, 0)) for n in nodes), default=0.0)
        if v <= most + _EPS:
            continue
        if k in ("CPU", "GPU"):
            fixes.append(f"--set placement.{d.role}.num_{k.lower()}s={most:g}")
        elif most == 0:
            fixes.append(f"add '{k}' to a node type, or drop it: --set placement.{d.role}.resources={{}}")
        else:
            fixes.append(f"--set placement.{d.role}.resources={{{k}: {most:g}}}")
    fix = "; ".join(fixes) or "no single node has all of it at once: ask less of one resource"
    return f"{d.role}: one unit asks {_fmt(unit)} but no node offers that (cluster: {offer}); fix: {fix}"


def _total_problems(demands: list[RoleDemand], nodes: list[dict], offer: str) -> list[str]:
    """One message per resource the roles ask more of, all together, than the cluster has. The fix
    goes to the role asking the most of it: the per-unit value that brings the total within reach."""
    problems = []
    for k in dict.fromkeys(k for d in demands for k in d.unit):
        askers = [d for d in demands if d.unit.get(k, 0) > 0]
        asked = sum(d.unit[k] * d.count for d in askers)
        has = sum(float(n.get(k, 0)) for n in nodes)
        if asked <= has + _EPS:
            continue
        big = max(askers, key=lambda d: d.unit[k] * d.count)
        room = has - (asked - big.unit[k] * big.count)  # what the other roles leave for this one
        each = max(0.0, math.floor(room / big.count * 100 + _EPS) / 100)
        name = {"CPU": "num_cpus", "GPU": "num_gpus"}.get(k)
        fix = (f"--set placement.{big.role}.{name}={each:g}" if name
               else f"--set placement.{big.role}.resources={{{k}: {each:g}}}")
        fewer = int(room // big.unit[k] + _EPS)
        if big.count_key and fewer >= 1:
            fix += f" or --set {big.count_key}={fewer}"
        if room < -_EPS:
            fix = (f"the other roles alone ask more than {has:g}: shrink several roles (their units, or {k} per "
                   "unit) or use a bigger cluster")
        parts = ", ".join(f"{d.role} {_how_many(d)} x {_fmt(d.unit)}" for d in askers)
        problems.append(f"{', '.join(d.role for d in askers)}: together they ask {k} {asked:g} ({parts}) but the "
                        f"cluster offers {k} {has:g} ({offer}); fix: {fix}")
    return problems


def _fragment_problem(d: RoleDemand, missing: int, offer: str) -> str:
    """The message when the totals fit but no node (or GPU card) has room left for a unit."""
    return (f"{d.role}: {missing} of {_how_many(d)} asking {_fmt(d.unit)} each find no node with room left beside "
            f"the other roles, although the totals fit ({offer}): GPU fractions that share a card must add up to at "
            f"most 1, and a unit cannot span nodes; use fractions that divide a card, or fewer, smaller units")


def check_placement(cfg: RunConfig, nodes: list[dict], roles: Iterable[str] | None = None) -> list[str]:
    """Every reason the run's roles cannot all be placed on `nodes` together; empty when they can.
    A role with a unit that fits no node gets its own message; then each resource the roles ask
    more of in all than the nodes have; then roles left over by fragmentation."""
    demands = [d for d in run_demands(cfg, roles) if any(v > 0 for v in d.unit.values())]
    offer = describe_nodes(nodes, ["CPU", "GPU", *(k for d in demands for k in d.unit)])
    failed = _pack(demands, nodes)
    if not failed:
        return []
    lone = {d.role: msg for d in demands if (msg := _lone_problem(d, nodes, offer))}
    rest = [d for d in demands if d.role not in lone]
    totals = _total_problems(rest, nodes, offer)
    if not lone and not totals:
        return [_fragment_problem(d, failed[d.role], offer) for d in demands if failed[d.role]]
    return [*lone.values(), *totals]


def nodes_from_node_types(groups: Iterable[tuple[dict, int]], unlimited: int) -> list[dict]:
    """Every node an autoscaler may run: each node type's resources `max_count` times (-1, no limit:
    `unlimited` times, enough for every unit of the run)."""
    nodes: list[dict] = []
    for resources, max_count in groups:
        if resources and max_count:
            nodes += [dict(resources) for _ in range(unlimited if max_count < 0 else max_count)]
    return nodes


@dataclass(frozen=True)
class ClusterOffer:
    """What the connected cluster has now (`alive`) and, when an autoscaler reported its node
    types, the most it can ever have (`maximum`; None when nothing reports it)."""

    alive: list[dict]
    maximum: list[dict] | None


def cluster_offer(unlimited: int = 64) -> ClusterOffer:
    """Read the cluster (needs `ray.init`). The node types come from the autoscaler's cluster
    config in the GCS, the same source Ray Train V2 reads (`ray._private.state.state`); Ray clusters
    without an autoscaler (a local instance, `ray start` by hand) report none."""
    import ray
    from ray._private.state import state

    alive = [dict(n["Resources"]) for n in ray.nodes() if n.get("Alive")]
    config = state.get_cluster_config()
    groups = [(dict(g.resources), g.max_count) for g in config.node_group_configs] if config else []
    return ClusterOffer(alive, nodes_from_node_types(groups, unlimited) or None)


def placement_error(cfg: RunConfig, offer: ClusterOffer, roles: Iterable[str] | None = None) -> PlacementError | None:
    """The error to raise when the roles fit neither what is up now nor the autoscaler's maximum."""
    roles = list(roles) if roles is not None else None
    problems = check_placement(cfg, offer.alive, roles)
    if not problems:
        return None
    if offer.maximum is not None:
        problems = check_placement(cfg, offer.maximum, roles)
        if not problems:
            return None  # more nodes than are up now, but the autoscaler can start them
        where = "even with every autoscaler node type at its max count"
    else:
        where = (f"checked against the {len(offer.alive)} node(s) up now: no autoscaler reported node types, "
                 "so the cluster is taken as it is")
    return PlacementError(f"the placement: section cannot fit this cluster ({where}). " + " | ".join(problems))


def ensure_placement(cfg: RunConfig, roles: Iterable[str] | None = None) -> None:
    """Raise PlacementError, before any actor starts, when the run's roles can never be placed."""
    roles = list(roles) if roles is not None else None
    err = placement_error(cfg, cluster_offer(sum(d.count for d in run_demands(cfg, roles))), roles)
    if err is not None:
        raise err
