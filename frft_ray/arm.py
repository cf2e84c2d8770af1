"""One RL arm on the run's learner and rollout pool: the steps of one FRFT iteration as named methods.

`driver.run()` calls them in order for each iteration: sample_policy -> refit_reward_model (or
keep_reward_model) -> measure_reward_model -> ppo_steps -> checkpoint. The arm's live objects (the
learner actor, the rollout pool, the RM it trains against) stay here; the record of each finished
iteration is an `IterationRecord` in the run's state.

Arms (`frft.arms`): `vanilla` (the initial RM, never refit), `frft` (refits on the pool pairs most
like the policy's samples), `random_refit` (refits on as many random pairs: is it the filter, or the
refit?) and `oracle` (PPO against the gold reward itself: the ceiling an RM could reach; benchmark only).
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Iterator

import numpy as np
import ray
from tqdm.auto import tqdm

from actors.reward_trainer import RMFitJob
from frft_ray import phases
from frft_ray.config import ARMS, RunConfig
from frft_ray.faults import kill_point
from frft_ray.run_data import RunData
from frft_ray.run_state import IterationRecord, Published
from frft_ray.tracking import PhaseTimer

if TYPE_CHECKING:
    from frft_ray.driver import RunFolder
    from frft_ray.run_state import RunState
    from frft_ray.workers import RunWorkers

log = logging.getLogger("frft_ray")

REFIT_ARMS = ("frft", "random_refit")


def arms_of(cfg: RunConfig) -> list[str]:
    """The arms a run trains, each from the same SFT policy and initial RM, in `config.ARMS` order
    (whatever order `frft.arms` lists them in): random_refit after frft, whose selection sizes it copies."""
    return [a for a in ARMS if a in cfg.frft.arms]


MIN_SPREAD = 1e-6  # an RM that scores every reference text alike is not divided by 0


def arm_index(arm: str) -> int:
    """The arm's seed offset: fixed per arm, so an arm draws the same samples whichever other arms run."""
    return ARMS.index(arm)


def random_refit_size(cfg: RunConfig, state: "RunState", it: int) -> tuple[int, str]:
    """How many random pairs random_refit's refit `it` draws, and where that number comes from: the
    pairs FRFT's refit `it` selected when FRFT runs too (trained first), else `filter.budget`."""
    frft = state.arms.get("frft")
    if "frft" in cfg.frft.arms and frft is not None and len(frft.iterations) >= it:
        return int(frft.iterations[it - 1].records), "frft"
    return cfg.filter.budget, "filter.budget"


class ArmTrainer:
    """Starts the run's learner and rollout pool over for this arm (from the SFT policy, or from the
    arm's last checkpoint when resuming); then one method per step of an iteration."""

    def __init__(self, cfg: RunConfig, run: "RunFolder", data: RunData, arm: str, arm_idx: int,
                 filter_cache: phases.PoolEmbeddingCache, workers: "RunWorkers"):
        self.cfg, self.run, self.data, self.arm, self.arm_idx = cfg, run, data, arm, arm_idx
        self.filter_cache, self.rm_trainer = filter_cache, workers.rm_trainer
        self.learner, self.pool = workers.learner, workers.pool
        self.state = run.state.arm(arm)
        self.refits, self.oracle = arm in REFIT_ARMS, arm == "oracle"
        if self.oracle and data.gold is None:
            raise ValueError("the oracle arm trains against the gold reward, which only data.format=benchmark has")
        last = self.state.last
        self.rm_path = run.dir / run.state.rm0_path  # the oracle holds the initial RM only for the learner's sake
        if last and not self.oracle:
            self.rm_path = (run.dir / last.path / "rm").resolve()
        self.rm_version = last.rm_version if last else 0
        timer = PhaseTimer()
        with timer("overhead_load"):  # model loads, no compute
            sft_path = run.dir / run.state.sft_path
            ray.get(self.learner.reset.remote(str(sft_path), cfg.seed + arm_idx))
            ray.get(self.learner.set_reference.remote(str(sft_path)))
            if last:
                ray.get(self.learner.restore.remote(str(run.dir / last.path / "policy")))
            self._load_rm()
            version = ray.get(self.learner.get_version.remote())
            self.pool.load_checkpoint(sft_path)
            if version:
                self.pool.sync_from_learner(version)
        run.state.add_timing(timer.totals)

    def remaining_iterations(self) -> Iterator[int]:
        return iter(range(len(self.state.iterations) + 1, self.cfg.frft.alpha + 1))

    # ------------------------------------------------------------ one iteration, in order
    def sample_policy(self, it: int) -> None:
        """Start iteration `it`: resize the rollout pool if `frft-ray scale` asked, then freeze the
        policy and sample it: frft on `rollout.filter_prompts` prompts (what it filters on), and, with a
        gold reward, a second sample of the first `eval.onpolicy_pairs` of them for on-policy pairs.
        Arms that do not filter sample only those pairs (nothing without gold)."""
        cfg = self.cfg
        self.it, self.timer = it, PhaseTimer()
        self.restarts_before = self.pool.restarts  # rollout workers restored after a crash, counted per iteration
        self.rng = np.random.default_rng([cfg.seed, self.arm_idx, it])
        wanted = phases.requested_rollout_workers(self.run.dir)
        if wanted and wanted != self.pool.size:
            log.info("scaling rollout workers %d -> %d", self.pool.size, wanted)
            self.pool.resize(wanted)
        self.iter_dir = self.run.dir / "ckpt" / f"{self.arm}-iter-{it:03d}"
        self.iter_dir.mkdir(parents=True, exist_ok=True)
        prompts = list(self.rng.choice(self.data.train_prompts, size=cfg.rollout.filter_prompts))
        prompts *= cfg.rollout.samples_per_prompt
        self.samples = self.samples_b = None
        if not self.oracle:  # the oracle has no RM to refit or measure
            seed_a, seed_b = (int(self.rng.integers(1 << 30)) for _ in range(2))  # drawn alike for every arm
            # frft filters on all G samples; the first `eval.onpolicy_pairs` of them, with a second sample of
            # the same prompts, measure the RM on the policy's own pairs, which only a gold reward can orient
            measured = prompts[: cfg.eval.onpolicy_pairs] if self.data.gold is not None else []
            wanted = prompts if self.arm == "frft" else measured  # vanilla, random_refit: only to measure
            with self.timer("generate"):
                self.samples = self.pool.generate(wanted, seed=seed_a) if wanted else None
                self.samples_b = self.pool.generate(measured, seed=seed_b) if measured else None
        self.record = IterationRecord(arm=self.arm, iteration=it, path=self.run.rel(self.iter_dir),
                                      rollout_workers=self.pool.size, samples=len(self.samples or []))

    def refit_reward_model(self) -> None:
        """Select pool pairs (filtered for frft, random for random_refit), refit the RM on them, and
        hand the new version to the learner and the endpoint."""
        cfg, it, rec, state = self.cfg, self.it, self.record, self.run.state
        size_from = None
        with self.timer("embed_filter"):
            if self.arm == "frft":
                sel = phases.select_for_refit(cfg, self.data, self.filter_cache, self.samples, seed=cfg.seed + it)
            else:
                size, size_from = random_refit_size(cfg, state, it)
                sel = phases.select_random(cfg, self.data, seed=cfg.seed + it, budget=size)
        pairs = [self.data.pool[i] for i in sel.indices]
        rec.records, rec.selection = len(pairs), sel.to_dict()
        if size_from:
            rec.selection["size_from"] = size_from
        if len(pairs) < cfg.reward.num_workers:
            log.warning("[%s it %d] %d pair(s) selected, fewer than the %d RM worker(s) a refit needs; keeping RM v%d",
                        self.arm, it, len(pairs), cfg.reward.num_workers, self.rm_version)
            self._link_rm()
            last = self.state.last
            rec.rm_heldout = last.rm_heldout if last else state.rm0.heldout
        else:
            self.rm_version = state.rm_version = state.rm_version + 1
            init = self.run.dir / state.rm0_path if cfg.reward.refit_from == "initial" else self.rm_path
            job = RMFitJob(init_path=str(init), out_path=str(self.iter_dir / "rm"), epochs=cfg.reward.refit_epochs,
                           lr=cfg.reward.refit_lr, version=self.rm_version, seed=cfg.seed + self.rm_version,
                           meta={"kind": "rm", "version": self.rm_version, "iteration": it, "arm": self.arm})
            with self.timer("rm_fit"):
                fit = self.rm_trainer.fit(job, pairs, self.data.heldout)
            kill_point(f"refit:{it}")
            self.rm_path = self.iter_dir / "rm"
            with self.timer("rm_eval"):
                self._load_rm()
            phases.publish_rm(cfg, self.run.dir, self.rm_path, self.rm_version)
            state.published = Published(self.run.rel(self.rm_path), self.rm_version)
            rec.rm_heldout, rec.rm_fit_loss = fit.get("eval_accuracy"), fit.get("train_loss")
        log.info("[%s it %d] selected %d of %d pairs; RM v%d held-out acc %s", self.arm, it, len(pairs),
                 len(self.data.pool), self.rm_version, _fmt(rec.rm_heldout))

    def keep_reward_model(self) -> None:
        """The vanilla arm trains against the initial RM throughout; the oracle against the gold reward
        (no RM: 0 records, no RM accuracies)."""
        if self.oracle:
            return
        self._link_rm()
        self.record.records, self.record.rm_heldout = self.run.state.rm0.records, self.run.state.rm0.heldout

    def measure_reward_model(self) -> None:
        """The current RM against the truth (gold reward), on the policy's own samples and held-out pairs."""
        rec = self.record
        rec.rm_version, rec.score_scale = self.rm_version, self.score_scale
        if self.oracle:
            return
        # the held-out pairs do not change, so an RM kept from the last iteration (vanilla; a refit that
        # selected too few pairs) keeps its held-out accuracies: only the new samples are measured
        last = self.state.last
        kept = last is not None and last.rm_version == self.rm_version
        with self.timer("rm_eval"):
            acc = phases.rm_truth_accuracy(self.learner, self.data, self.samples, self.samples_b, heldout=not kept)
        if kept:
            acc["rm_heldout_gold"], acc["rm_heldout_policy_like"] = last.rm_heldout_gold, last.rm_heldout_policy_like
        rec.rm_on_policy, rec.rm_heldout_gold = acc["rm_on_policy"], acc["rm_heldout_gold"]
        rec.rm_heldout_policy_like = acc["rm_heldout_policy_like"]

    def ppo_steps(self) -> None:
        """`frft.steps_per_iteration` PPO steps: generate -> RM score + PPO update (learner) -> new weights
        to the rollout workers, versioned."""
        cfg, rec, timer = self.cfg, self.record, self.timer
        for step in tqdm(range(cfg.frft.steps_per_iteration), desc=f"{self.arm} it {self.it} PPO", leave=False):
            prompts = list(self.rng.choice(self.data.train_prompts, size=cfg.ppo.batch_size))
            with timer("generate"):
                batch = self.pool.generate(prompts, seed=int(self.rng.integers(1 << 30)))
            rec.ppo_samples += len(batch)
            with timer("ppo"):
                gold = self.data.gold(batch.prompts, batch.responses) if self.data.gold is not None else None
                stats = ray.get(self.learner.train_step.remote(batch, gold if self.oracle else None))
            with timer("sync"):
                self.pool.sync_from_learner(stats["policy_version"])
            # the over-optimisation curve: KL(pi || SFT) and the gold reward of the same batch, every step
            rec.scores.append(stats["ppo/score_mean"])
            rec.kl.append(stats["ppo/mean_kl"])
            if gold is not None:
                rec.gold.append(float(np.mean(gold)))
                stats["gold/mean"] = rec.gold[-1]
            global_step = (self.it - 1) * cfg.frft.steps_per_iteration + step + 1
            self.run.metrics.log({"arm": self.arm, "iteration": self.it, "step": global_step, **stats},
                                 step=global_step, prefix=f"{self.arm}/")
            kill_point(f"ppo:{self.it}:{step + 1}")
        rec.score_first, rec.score_last = rec.scores[0], rec.scores[-1]

    def checkpoint(self) -> None:
        """Save policy + learner state, then the run state and `latest` (written last)."""
        rec, timer = self.record, self.timer
        with timer("sync_check"):  # every worker holds the learner's weights, bit for bit (raises if not)
            verified = self.pool.check_weights()
        rec.timing = {k: round(v, 3) for k, v in timer.totals.items()}
        self.run.state.add_timing(timer.totals)
        with timer("checkpoint"):
            ray.get(self.learner.save.remote(str(self.iter_dir / "policy"), {
                "kind": "policy", "arm": self.arm, "iteration": self.it, "rm_version": self.rm_version}))
            self.state.iterations.append(rec)
            self.state.done = self.it == self.cfg.frft.alpha
            self.run.save(self.iter_dir)
        self.run.metrics.log({"arm": self.arm, "iteration": self.it, "records": rec.records,
                              "rm/heldout_accuracy": rec.rm_heldout, "rm/on_policy_accuracy": rec.rm_on_policy,
                              "rollout/restarts": self.pool.restarts - self.restarts_before,
                              "rollout/weights_verified": int(verified),
                              **timer.as_metrics()}, step=self.it, prefix=f"{self.arm}/iter/")
        log.info("[%s it %d/%d] rm v%d on-policy acc %s | score %.3f -> %.3f | %s", self.arm, self.it,
                 self.cfg.frft.alpha, self.rm_version, _fmt(rec.rm_on_policy), rec.score_first, rec.score_last,
                 " ".join(f"{k}={v:.1f}s" for k, v in timer.totals.items()))

    def stop_requested(self) -> bool:
        """frft.stop_after asks to stop here (tests and resume drills)."""
        stop = self.cfg.frft.stop_after
        return stop is not None and self.it >= stop and not self.state.done

    # ------------------------------------------------------------ helpers
    def _load_rm(self) -> None:
        """Hand the current RM to the learner, in the units `ppo.score_scale` asks for: its own, or (a refit
        RM with `initial_rm`) rescaled to the initial RM's spread on the same held-out responses."""
        scaled = self.cfg.ppo.score_scale == "initial_rm" and not self.oracle and self.rm_version > 0
        if scaled and self.run.rm0_spread is None:  # once per invocation
            ray.get(self.learner.load_rm.remote(str(self.run.dir / self.run.state.rm0_path), 0))
            self.run.rm0_spread = phases.rm_score_spread(self.learner, self.data)
        ray.get(self.learner.load_rm.remote(str(self.rm_path), self.rm_version))
        self.score_scale = 1.0
        if scaled:
            spread = phases.rm_score_spread(self.learner, self.data)
            self.score_scale = self.run.rm0_spread / max(spread, MIN_SPREAD)
            ray.get(self.learner.set_score_scale.remote(self.score_scale))
            log.info("[%s] RM v%d: score spread %.3f, initial RM's %.3f: PPO sees its scores x %.3f "
                     "(ppo.score_scale=initial_rm)", self.arm, self.rm_version, spread, self.run.rm0_spread,
                     self.score_scale)

    def _link_rm(self) -> None:
        """The iteration's RM is unchanged: link to it rather than copy it."""
        link = self.iter_dir / "rm"
        if not link.is_symlink():
            link.symlink_to(os.path.relpath(self.rm_path, self.iter_dir))


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.3f}"
