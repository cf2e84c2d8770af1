"""The FRFT driver: the whole run, readable top to bottom in `run()`.

SFT -> initial RM -> for each arm of `frft.arms` (vanilla, frft, random_refit, oracle, in that order)
and each iteration 1..alpha: freeze the policy and sample, [select pairs, refit the RM, publish it],
run T PPO steps, checkpoint (frft_ray/arm.py) -> evaluate every policy on held-out prompts -> summary.json.

Where things run is the `placement:` section; what crosses Ray is typed (`RunConfig` and its
sections, `RolloutBatch`, `RMFitJob`, checkpoint paths with versions); the run's state is a
`RunState` (frft_ray/run_state.py), written with every checkpoint, so `--resume` continues after
the last complete iteration.
"""

from __future__ import annotations

import logging
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import ray

from actors.reward_trainer import RMFitJob
from actors.rollout_pool import RolloutPool
from frft_ray import base_cache, phases, progress
from frft_ray.arm import ArmTrainer, arm_index, arms_of
from frft_ray.config import RunConfig, dump_config
from frft_ray.models import check_model_sources
from frft_ray.run_data import RunData, prepare_run_data
from frft_ray.run_state import InitialRM, RunState, read_latest, write_json, write_latest
from frft_ray.summary import build_summary, print_summary, write_report
from frft_ray.tracking import MetricsLogger, PhaseTimer, RunLog
from frft_ray.workers import RunWorkers

log = logging.getLogger("frft_ray")


def run(cfg: RunConfig, run_dir: Path, resume: bool = False) -> dict | None:
    """The whole run. Returns the summary, or None when it stopped early (frft.stop_after) or had finished."""
    phases.check_serving(cfg)  # a token or bind problem fails now, not after SFT
    run = RunFolder.open(cfg, Path(run_dir), resume)
    if run is None:
        return None
    started_ray, timer, endpoint = False, PhaseTimer(), None
    try:
        # ---- data and model names are checked before Ray starts: a bad record or an unknown model fails in seconds
        if not run.state.base_done:
            check_model_sources(cfg.models)
        data = prepare_run_data(cfg)
        log.info("data: %d SFT demos, %d pool pairs, %d held-out pairs, %d train / %d eval prompts; "
                 "skipped records: %s", len(data.sft_prompts), len(data.pool), len(data.heldout),
                 len(data.train_prompts), len(data.eval_prompts), data.report.skipped or "none")
        started_ray = phases.ray_init(cfg)
        # ---- the run's Ray roles start once (workers.py): learner, RM trainer, embedders now; rollout pool
        # as soon as a policy exists
        with RunWorkers(cfg, run.dir, timer) as workers:
            base = None if run.state.base_done else phases.build_base_checkpoints(cfg, data, run.dir / "ckpt")
            workers.start_policy(base[0] if base else run.dir / run.state.sft_path)
            run.state.add_timing(timer.totals)
            filter_cache = phases.PoolEmbeddingCache(cfg, data.pool, workers.embedders)
            if workers.embedders is not None and phases.embed_early(cfg):
                filter_cache.prefetch()  # the pool's embeddings, while SFT, the initial RM and vanilla run

            # ---- 1. SFT and the initial RM (skipped on resume: they are in the checkpoint)
            if base:
                train_base_models(cfg, data, run, workers, base_rm=base[1])
                if cfg.resources.base_cache_dir:  # later runs with the same base settings start from here
                    base_cache.save_to_cache(run.dir, base_cache.run_cache_entry(cfg))

            # ---- the run's RM endpoint serves the newest RM for the rest of the run (serve.enabled)
            endpoint = phases.start_serving(cfg, run.dir, run.state)

            # ---- 2. RL arms from the same SFT policy: vanilla, frft, random_refit (sized like frft's refits), oracle
            for arm in arms_of(cfg):
                if run.state.arm(arm).done:
                    continue
                trainer = ArmTrainer(cfg, run, data, arm, arm_index(arm), filter_cache, workers)
                for it in trainer.remaining_iterations():
                    trainer.sample_policy(it)  # freeze the policy; sample what it writes now
                    if trainer.refits:
                        trainer.refit_reward_model()  # select pairs like the samples, refit, publish
                    else:
                        trainer.keep_reward_model()  # vanilla: the initial RM; oracle: the gold reward
                    trainer.measure_reward_model()  # RM accuracy against the truth, where known
                    trainer.ppo_steps()  # T PPO steps against the current RM
                    trainer.checkpoint()
                    if trainer.stop_requested():
                        log.info("stopping after %s iteration %d as asked (frft.stop_after); resume with --resume %s",
                                 arm, it, run.dir)
                        return None

            # ---- 3. Evaluation on held-out prompts and the summary
            run.state.wall_s = run.clock()
            return evaluate_run(cfg, run.dir, data, run.state, pool=workers.pool)
    finally:
        phases.stop_serving(cfg, endpoint)
        run.close()
        if started_ray:
            ray.shutdown()


@dataclass
class RunFolder:
    """The run folder, its state and metrics, and the run's wall clock across resumes."""

    dir: Path
    state: RunState
    metrics: MetricsLogger
    run_log: RunLog
    started: float = field(default_factory=time.time)  # this invocation's start
    rm0_spread: float | None = None  # the initial RM's score spread (ppo.score_scale=initial_rm), once per invocation
    wall_before: float = 0.0  # the wall time of earlier invocations (before a resume)

    @classmethod
    def open(cls, cfg: RunConfig, run_dir: Path, resume: bool) -> "RunFolder | None":
        """A new run folder, or the one to resume; None when a resumed run had already finished."""
        run_dir = run_dir.resolve()
        if resume and (run_dir / "summary.json").exists():
            log.info("run in %s already finished; nothing to do (summary.json exists)", run_dir)
            return None
        if not resume and (run_dir / "latest").exists():
            raise FileExistsError(f"{run_dir} already holds a run; pass --resume {run_dir} or choose another --out")
        (run_dir / "ckpt").mkdir(parents=True, exist_ok=True)
        run_log = RunLog(run_dir)
        try:
            reused = not resume and base_cache.reuse_base(cfg, run_dir)  # resources.base_cache_dir
            latest = read_latest(run_dir) if resume or reused else None
            dump_config(cfg, run_dir / "config.yaml")
            state = latest[1] if latest else RunState()
            metrics = MetricsLogger(run_dir)
            if resume and latest:
                log.info("resuming from %s (%s)", latest[0].name, _where(state))
            if resume:  # what an unfinished iteration logged before a crash is logged again when it reruns
                metrics.keep_completed({arm: len(a.iterations) for arm, a in state.arms.items()})
        except BaseException:
            run_log.close()  # a run that never opened leaves no handler behind
            raise
        return cls(run_dir, state, metrics, run_log, wall_before=state.wall_s)

    def clock(self) -> float:
        """The run's wall time so far, across resumes."""
        return self.wall_before + time.time() - self.started

    def rel(self, path: Path) -> str:
        return phases.rel(self.dir, path)

    def save(self, ckpt_dir: Path) -> None:
        """Record the state with the checkpoint in `ckpt_dir`, then point `latest` at it."""
        self.state.wall_s = self.clock()
        write_latest(self.dir, ckpt_dir, self.state)

    def close(self) -> None:
        self.metrics.close()
        self.run_log.close()


def train_base_models(cfg: RunConfig, data: RunData, run: RunFolder, workers: RunWorkers, base_rm: Path) -> None:
    """SFT on the demonstrations (the learner) and the initial RM on all pairs or k random ones (the RM
    trainer): side by side when `phases.overlap_base_models` says they fit, else one after the other."""
    ckpt_dir, timer = run.dir / "ckpt", PhaseTimer()
    learner = workers.learner
    overlap = phases.overlap_base_models(cfg)
    pairs = phases.initial_rm_pairs(cfg, data)
    job = RMFitJob(init_path=str(base_rm), out_path=str(ckpt_dir / "rm-v0"), epochs=cfg.reward.init_epochs,
                   lr=cfg.reward.lr, version=0, seed=cfg.seed, meta={"kind": "rm", "version": 0, "iteration": 0,
                                                                     "stage": "initial"})
    fit_msg = (f"initial RM: Bradley-Terry fit on {len(pairs)} pairs x {cfg.reward.init_epochs:.1f} epochs with "
               f"Ray Train ({cfg.reward.num_workers} worker(s))")
    log.info("SFT: %d demonstrations x %.1f epochs on the learner actor%s ...", len(data.sft_prompts),
             cfg.sft.epochs if cfg.sft.enabled else 0, f"; beside it, {fit_msg}" if overlap else "")
    with timer("base"):
        with timer("sft"):
            started = time.monotonic()
            sft_ref = learner.sft.remote(data.sft_prompts, data.sft_responses, workers.board) if cfg.sft.enabled else None
            rm_fit = workers.rm_trainer.submit(job, pairs, data.heldout) if overlap else None
            labels = {"sft": "SFT steps", "rm-v0": "RM v0 fit steps"}  # the initial RM: only when it runs beside SFT
            sft_metrics = progress.wait([sft_ref], lambda _: progress.board_lines(workers.board, labels, started),
                                        cfg.resources.progress_every_s)[0] if sft_ref else {}
            ray.get(learner.save.remote(str(ckpt_dir / "sft"), {"kind": "policy", "stage": "sft"}))
        log.info("SFT: %s (%.1fs)", sft_metrics, timer.totals["sft"])
        if not overlap:
            log.info("%s ...", fit_msg)
            rm_fit = workers.rm_trainer.submit(job, pairs, data.heldout)
        rm0 = workers.rm_trainer.result(rm_fit)
        timer.totals["rm_fit"] = rm0["wall_s"]
    log.info("initial RM: %d pairs, held-out accuracy %.3f (%.1fs%s)", len(pairs), rm0.get("eval_accuracy", float("nan")),
             rm0["wall_s"], f"; with SFT beside it {timer.totals['base']:.1f}s in all" if overlap else "")

    s = run.state
    s.sft_path, s.rm0_path, s.sft = "ckpt/sft", "ckpt/rm-v0", sft_metrics
    s.rm0 = InitialRM(records=len(pairs), heldout=rm0.get("eval_accuracy"))
    s.add_timing(timer.totals)
    run.save(ckpt_dir / "rm-v0")
    run.metrics.log({"phase": "base", **{f"sft/{k}": v for k, v in sft_metrics.items()},
                     "rm/heldout_accuracy": rm0.get("eval_accuracy"), "rm/records": len(pairs),
                     "base/overlap": overlap, "timing/base": timer.totals["base"]}, step=0)


def evaluate_run(cfg: RunConfig, run_dir: Path, data: RunData, state: RunState | None = None,
                 pool: RolloutPool | None = None) -> dict:
    """Judge the SFT policy and each arm's last policy on held-out prompts; write summary.json and
    report.png; return the summary. Without `state`, the run folder's latest state is read; without
    `pool`, a rollout pool is started for the evaluation."""
    run_dir = Path(run_dir).resolve()
    if state is None:
        latest = read_latest(run_dir)
        if latest is None or not latest[1].arms:
            raise FileNotFoundError(f"{run_dir} has no completed RL iteration to evaluate")
        state = latest[1]
    sft_path = run_dir / state.sft_path
    pad_id = phases.pad_id(sft_path)
    prompts = data.eval_prompts[: cfg.eval.num_prompts]
    policies = {"sft": sft_path}
    for arm, a in state.arms.items():
        if a.last is not None:
            policies[arm] = run_dir / a.last.path / "policy"
    t0 = time.time()
    judge = phases.make_judge(cfg, data, run_dir / state.rm0_path)
    judged = {}
    with nullcontext(pool) if pool else RolloutPool(str(sft_path), cfg, pad_id) as pool:
        for name, path in policies.items():
            responses = phases.evaluate_policy(cfg, pool, path, prompts)
            judged[name] = {"responses": responses, "scores": judge(prompts, responses)}
    state.timing["eval"] = state.timing.get("eval", 0.0) + time.time() - t0
    wall = state.wall_s + time.time() - t0  # the run's wall time up to here, evaluation included
    summary = build_summary(cfg, state, prompts, judged, wall_s=wall, data_report=data.report)
    write_json(run_dir / "summary.json", summary)
    write_report(summary, run_dir / "report.png")
    print_summary(summary)
    return summary


def _where(state: RunState) -> str:
    done = [f"{arm}: {len(a.iterations)} iteration(s)" + (" (done)" if a.done else "")
            for arm, a in state.arms.items()]
    return "; ".join(done) or "SFT and initial RM done"
