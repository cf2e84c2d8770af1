"""The driver's building blocks. Each says *what* happens; the Ray-side roles in actors/ and serve/ say *how*.

Part of the driver layer (with driver.py and arm.py): the only core modules that reach into actors/ and serve/.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import ray

from frft_ray.config import RunConfig
from frft_ray.run_data import RunData
from frft_ray.run_state import Published, RunState

log = logging.getLogger("frft_ray")


def rel(run_dir: Path, path: Path) -> str:
    return str(Path(path).relative_to(run_dir))


# ---------------------------------------------------------------- base models, SFT, initial RM


def build_base_checkpoints(cfg: RunConfig, data: RunData, ckpt_dir: Path) -> tuple[Path, Path]:
    """Tokenizer + untrained (or pretrained) policy and RM, saved as the run's starting points."""
    from frft_ray.models import build_policy, build_reward_model, load_tokenizer, save_checkpoint, train_tokenizer

    m = cfg.models
    if m.policy == "tiny" or m.reward == "tiny":
        tok = train_tokenizer(data.tokenizer_corpus(), m.tiny.vocab_size, m.max_length)
    else:
        tok = load_tokenizer(m.policy, m.trust_remote_code)
    policy_path, rm_path = ckpt_dir / "base_policy", ckpt_dir / "base_rm"
    save_checkpoint(policy_path, build_policy(m, tok, cfg.seed), tok, cfg, {"kind": "policy", "stage": "base"})
    rm_tok = tok if m.reward == "tiny" else load_tokenizer(m.reward, m.trust_remote_code)
    save_checkpoint(rm_path, build_reward_model(m, rm_tok, cfg.seed), rm_tok, cfg, {"kind": "rm", "version": 0})
    return policy_path, rm_path


def initial_rm_pairs(cfg: RunConfig, data: RunData) -> list:
    k = cfg.reward.init_records
    if k == "all" or k >= len(data.pool):
        return data.pool
    rng = np.random.default_rng([cfg.seed, 17])
    return [data.pool[i] for i in sorted(rng.choice(len(data.pool), size=k, replace=False))]


def overlap_base_models(cfg: RunConfig) -> bool:
    """Whether SFT and the initial RM fit run side by side (`resources.overlap_base_models`). `auto`:
    when the learner and the RM trainer both compute on GPUs, or on CPUs when their torch threads
    (`resources.torch_threads` each, one learner plus `reward.num_workers`) fit the cluster's CPUs.
    Unset threads or more threads than cores: one after the other (on 2 cores two 2-thread fits side
    by side each ran ~3x slower than alone, losing what the overlap would win)."""
    choice = cfg.resources.overlap_base_models
    if choice != "auto":
        return bool(choice)
    place = cfg.placement
    if place.learner.num_gpus > 0 and place.reward_trainer.num_gpus > 0:
        return True
    threads = cfg.resources.torch_threads
    return threads is not None and threads * (1 + cfg.reward.num_workers) <= ray.cluster_resources().get("CPU", 0)


# ---------------------------------------------------------------- filtering


def embed_early(cfg: RunConfig) -> bool:
    """Whether the run embeds the pool from its start (`filter.embed_early`; auto: when the embedders have GPUs)."""
    choice = cfg.filter.embed_early
    return cfg.placement.embedder.num_gpus > 0 if choice == "auto" else bool(choice)


class PoolEmbeddingCache:
    """Embeds the preference pool once per run (and once per dataset on disk, via the cache), and runs
    FRFT selection where `placement.embedder` says: on an embedder actor's GPU when it reserves GPUs
    (the pool goes to the object store once, the actor keeps it on its device), else here on the CPU
    (the pool normalised once, kept as a `pool_scan.DevicePool`)."""

    def __init__(self, cfg: RunConfig, pool: list, embedders):
        self.cfg, self.pool, self.embedders, self._emb = cfg, pool, embedders, None
        self.precision = embedders.precision if embedders is not None else "fp32"  # the cache key's dtype
        self._local = self._ref = None
        self._early = None  # (texts, PendingEmbedding) of the pool, started by `prefetch`

    def prefetch(self) -> None:
        """Start embedding what the pool's cache lacks (the strategy's sides) on the embedder actors now,
        in the background at idle CPU priority: they are idle until FRFT's first refit, which
        then only collects the result. Nothing to do on a warm cache."""
        from frft_ray.pool_embeddings import texts_to_embed

        texts = texts_to_embed(self.pool, self.cfg.filter, precision=self.precision)
        if texts:
            log.info("embedding the pool's %d distinct texts in the background (filter.embed_early)", len(texts))
            self._early = (texts, self.embedders.submit(texts, background=True))

    def embed(self, texts: list[str]) -> np.ndarray:
        if self._early is not None and texts == self._early[0]:  # the pool's texts, embedded by `prefetch`
            early, self._early = self._early[1], None
            return early.result(self.cfg.resources.progress_every_s)
        return self.embedders.embed(texts)  # the run's embedder actors (actors/embedder.py)

    def pool_embeddings(self):
        if self._emb is None:
            from frft_ray.pool_embeddings import cached_pool_embeddings

            self._emb = cached_pool_embeddings(self.pool, self.cfg.filter, self.embed, precision=self.precision)
        return self._emb

    def select(self, gen_emb: np.ndarray, gen_prompt_emb, f, seed: int, gen_groups=None):
        """`filtering.select_pairs` of the pool against these generations, under the filter config `f`."""
        import time

        from frft_ray.filtering import finish, rank_rows

        t0 = time.perf_counter()
        if self.cfg.placement.embedder.num_gpus > 0:
            if self._ref is None:
                self._ref = ray.put(self.pool_embeddings())
            ranked = self.embedders.rank(self._ref, len(self.pool), gen_emb, gen_prompt_emb, f, seed, gen_groups)
        else:
            if self._local is None:
                from frft_ray.pool_scan import DevicePool

                self._local = DevicePool(self.pool_embeddings())
            ranked = rank_rows(len(self.pool), self._local, gen_emb, gen_prompt_emb, f, seed, gen_groups)
        return finish(self.pool, ranked, t0)


def select_for_refit(cfg: RunConfig, data: RunData, cache: PoolEmbeddingCache, samples, seed: int):
    """The pairs an FRFT refit trains on: the pool pairs most like the policy's samples (`filter:`), with
    `filter.random_share` of them swapped for random pool pairs."""
    from frft_ray.embedding import compose_text
    from frft_ray.filtering import mix_random, with_min_records
    from frft_ray.strategies import get_strategy

    f = cfg.filter
    gen_emb = cache.embed([compose_text(p, r, f.embed) for p, r in zip(samples.prompts, samples.responses)])
    gen_prompt_emb = gen_groups = None
    if get_strategy(f.strategy).needs_prompt_embeddings:
        distinct = sorted(set(samples.prompts))
        gen_prompt_emb = cache.embed(samples.prompts)
        gen_groups = np.array([distinct.index(p) for p in samples.prompts])
    sel = cache.select(gen_emb, gen_prompt_emb, f, seed, gen_groups)
    sel = with_min_records(data.pool, sel, f, lambda topped: cache.select(gen_emb, gen_prompt_emb, topped, seed,
                                                                          gen_groups))
    return mix_random(data.pool, sel, f.random_share, seed)


def select_random(cfg: RunConfig, data: RunData, seed: int, budget: int | None = None):
    """The random_refit ablation: `budget` (default `filter.budget`) pool pairs drawn uniformly (no embeddings)."""
    from frft_ray.filtering import random_selection

    return random_selection(data.pool, cfg.filter.budget if budget is None else budget, seed)


# ---------------------------------------------------------------- measuring RMs and policies


def onpolicy_pairs(data: RunData, samples_a, samples_b) -> list:
    """Pairs of the policy's own samples on the same prompts, oriented by the gold reward (ties dropped)."""
    from frft_ray.data.records import PreferencePair

    if data.gold is None:
        return []
    ga = data.gold(samples_a.prompts, samples_a.responses)
    gb = data.gold(samples_b.prompts, samples_b.responses)
    pairs = []
    for i, (p, a, b) in enumerate(zip(samples_a.prompts, samples_a.responses, samples_b.responses)):
        if ga[i] == gb[i]:
            continue
        c, r = (a, b) if ga[i] > gb[i] else (b, a)
        pairs.append(PreferencePair(id=f"onpolicy:{i}", prompt=p, chosen=c, rejected=r, source="policy"))
    return pairs


SPREAD_PAIRS = 256  # held-out pairs (both responses) on which an RM's score spread is measured


def spread_texts(data: RunData) -> tuple[list[str], list[str]]:
    """(prompts, responses) an RM's score spread is measured on: both responses of the first `SPREAD_PAIRS`
    held-out pairs (the pool's, when there are no held-out pairs), the same for every RM of a run."""
    pairs = (data.heldout or data.pool)[:SPREAD_PAIRS]
    return [p.prompt for p in pairs] * 2, [p.chosen for p in pairs] + [p.rejected for p in pairs]


def rm_score_spread(learner, data: RunData) -> float:
    """The std of the learner's current RM's scores on `spread_texts(data)`, so two RMs' spreads compare
    (ppo.score_scale=initial_rm)."""
    return float(np.std(ray.get(learner.score.remote(*spread_texts(data)))))


def rm_truth_accuracy(learner, data: RunData, samples_a, samples_b, heldout: bool = True) -> dict:
    """The current RM's accuracy against the truth: on the policy's own samples (pairs judged by the gold
    reward) and, with `heldout`, on held-out pairs re-oriented by gold (all, and the policy-like ones).
    None where not measured, and everywhere without gold."""
    out = {"rm_on_policy": None, "rm_heldout_gold": None, "rm_heldout_policy_like": None}
    if data.gold is None:
        return out
    sets = [("rm_on_policy", onpolicy_pairs(data, samples_a, samples_b))]
    if heldout:
        sets += [("rm_heldout_gold", data.heldout_gold), ("rm_heldout_policy_like", data.heldout_policy_like)]
    for key, pairs in sets:
        if pairs:
            out[key] = ray.get(learner.rm_accuracy.remote(pairs))["accuracy"]
    return out


def evaluate_policy(cfg: RunConfig, pool, policy_path: Path, prompts: list[str]) -> list[str]:
    """Responses of a saved policy to the evaluation prompts, from `pool` (an actors.rollout_pool.RolloutPool)
    at `rollout.num_workers` workers, as a new pool would give them."""
    if pool.size != cfg.rollout.num_workers:  # a run may have scaled it; shards (and seeds) follow the config
        pool.resize(cfg.rollout.num_workers)
    pool.load_checkpoint(policy_path)
    return pool.generate(prompts, greedy=cfg.eval.greedy, seed=cfg.seed + 991).responses


def make_judge(cfg: RunConfig, data: RunData, rm_path: Path):
    """judge(prompts, responses) -> rewards: the gold reward on the benchmark; otherwise the judge RM
    (the initial RM, trained on all data), loaded once here for every policy it judges."""
    if data.gold is not None and cfg.eval.judge == "gold":
        return lambda prompts, responses: list(data.gold(prompts, responses))
    from frft_ray.models import load_reward_checkpoint, score

    loaded = load_reward_checkpoint(rm_path, cfg.models.trust_remote_code)
    return lambda prompts, responses: score(loaded.model, loaded.tokenizer, prompts, responses,
                                            cfg.models.max_length).tolist()


def pad_id(policy_path: Path) -> int:
    """The pad token id of a policy checkpoint's tokenizer (rollout batches are padded with it)."""
    from frft_ray.models import load_tokenizer

    return load_tokenizer(str(policy_path)).pad_token_id


# ---------------------------------------------------------------- rollout scaling on request


def requested_rollout_workers(run_dir: Path) -> int | None:
    """`frft-ray scale RUN_DIR --rollout-workers N` writes RUN_DIR/control.json; read at iteration boundaries."""
    import json

    f = run_dir / "control.json"
    if not f.exists():
        return None
    try:
        n = int(json.loads(f.read_text())["rollout_workers"])
    except (ValueError, KeyError, TypeError) as e:
        log.warning("ignoring %s: %s", f, e)
        return None
    return n if n >= 1 else None


def ray_init(cfg: RunConfig) -> bool:
    """Start (or join) Ray. Returns True when this call started it and should shut it down.

    `resources.address` (or RAY_ADDRESS, always set inside a Ray job) joins that cluster as is: its
    runtime env (working_dir, env vars) comes from the job. Otherwise a private local instance starts,
    bound to loopback, with Serve's direct ingress on (`frft_ray.env.SERVE_INGRESS_ENV`, unless the
    environment sets those variables already).
    """
    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    r = cfg.resources
    address = r.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=True)
    else:
        from frft_ray.env import SERVE_INGRESS_ENV, apply_offline_defaults

        apply_offline_defaults(SERVE_INGRESS_ENV)
        ray.init(address="local", num_cpus=r.num_cpus, include_dashboard=False, log_to_driver=False,
                 object_store_memory=r.object_store_memory_mb * 2**20, _temp_dir=r.temp_dir)
    return True


def check_serving(cfg: RunConfig) -> None:
    """Fail at the start of a run, not after SFT, when its endpoint (serve.enabled) could not start."""
    if cfg.serve.enabled:
        check_endpoint(cfg)


def check_endpoint(cfg: RunConfig) -> None:
    """Before Ray starts: an unreadable `serve.auth_token_file`, a non-loopback host with no token, or
    (when `ray_init` will start a Ray instance of its own) a `serve.port` another process holds are
    ConfigErrors (serve/settings.py). On a cluster the project joins, `serve.launch.start_server`
    checks the port where Serve is not running yet."""
    from serve.settings import check_bind, check_port_free, resolve_token

    check_bind(cfg.serve, resolve_token(cfg.serve))
    if not (ray.is_initialized() or cfg.resources.address or os.environ.get("RAY_ADDRESS")):
        check_port_free(cfg.serve)


def start_serving(cfg: RunConfig, run_dir: Path, state: RunState):
    """Bring up this run's RM endpoint (when `serve.enabled`) on the run's newest RM; returns its
    `serve.launch.Endpoint` (None when disabled). The app, its version registry and its route are
    named after the run folder, so runs sharing a cluster never serve each other's RM.

    On a resume the endpoint may still be up (serve.keep_alive, or a crash): the same (version, path)
    is a no-op, and a registry that is ahead makes the run continue from its version, so the next
    refit is newer (`serve.launch.publish_resumed`)."""
    if not cfg.serve.enabled:
        return None
    from serve.launch import Endpoint, publish_resumed, replica_urls, start_server, url_lines

    endpoint = Endpoint.for_folder(run_dir)
    newest = state.published or Published(state.rm0_path, 0)
    entry = publish_resumed(run_dir / newest.path, newest.version, endpoint.app_name)
    if entry["version"] != newest.version:
        state.published = Published(newest.path, entry["version"])
    state.rm_version = max(state.rm_version, entry["version"])
    url = start_server(cfg.serve, run_dir / newest.path, entry["version"], app_name=endpoint.app_name,
                       route_prefix=endpoint.route_prefix, placement=cfg.placement.serve, precision=cfg.precision)
    log.info("reward model v%d served for this run%s:", entry["version"],
             "" if cfg.serve.keep_alive else " (until it ends; serve.keep_alive=true keeps it up)")
    for line in url_lines(url, replica_urls(endpoint.app_name)):
        log.info("  %s", line)
    return endpoint


def publish_rm(cfg: RunConfig, run_dir: Path, rm_path: Path, version: int) -> None:
    """Tell the run's endpoint (when `serve.enabled`) to hot-swap to this RM version, in place."""
    if not cfg.serve.enabled:
        return
    from serve.launch import Endpoint
    from serve.launch import publish_rm as _publish

    _publish(str(rm_path), version, app_name=Endpoint.for_folder(run_dir).app_name)
    log.info("published RM v%d to the endpoint", version)


def stop_serving(cfg: RunConfig, endpoint) -> None:
    """Stop the run's endpoint (its Serve app and version registry) as the run ends, unless
    `serve.keep_alive`. Called while the run unwinds, so a failure here is logged, not raised over
    the run's own outcome."""
    if endpoint is None:
        return
    if cfg.serve.keep_alive:
        log.info("the RM endpoint stays up (serve.keep_alive): Serve app %s", endpoint.app_name)
        return
    from serve.launch import stop_server

    try:
        stop_server(endpoint.app_name)
    except Exception as e:
        log.warning("could not stop the RM endpoint %s: %r (stop it with serve.delete(%r))",
                    endpoint.app_name, e, endpoint.app_name)
