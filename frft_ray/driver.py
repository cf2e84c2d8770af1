"""The FRFT driver: the whole loop, readable top to bottom in `run()`.

SFT -> initial RM -> for each arm (vanilla baseline, then FRFT or random-refit) and each iteration
1..alpha: freeze the policy and sample K prompts, [embed + filter, refit the RM, publish it], run T PPO
steps, checkpoint. Then evaluate every policy on held-out prompts and write summary.json.
After each iteration the checkpoint folder holds policy, value head, optimizer/KL state, the RM (or a
link to it) and the driver state; `RUN_DIR/latest` is written last, so `--resume` can trust it.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np
import ray
from tqdm.auto import tqdm

from actors.ppo_learner import PPOLearnerActor
from actors.rollout_pool import RolloutPool
from frft_ray import phases
from frft_ray.config import RunConfig, dump_config
from frft_ray.run_data import prepare_run_data
from frft_ray.summary import build_summary, print_summary, write_report
from frft_ray.tracking import MetricsLogger, PhaseTimer, read_latest, write_latest

log = logging.getLogger("frft_ray")


def arms_of(cfg: RunConfig) -> list[str]:
    mode = cfg.frft.mode
    return ["vanilla", mode] if cfg.frft.compare_vanilla and mode != "vanilla" else [mode]


def run(cfg: RunConfig, run_dir: Path, resume: bool = False) -> dict | None:
    run_dir = Path(run_dir).resolve()
    if (run_dir / "summary.json").exists() and resume:
        log.info("run in %s already finished; nothing to do (summary.json exists)", run_dir)
        return None
    latest = read_latest(run_dir) if resume else None
    if not resume and (run_dir / "latest").exists():
        raise FileExistsError(f"{run_dir} already holds a run; pass --resume {run_dir} or choose another --out")
    ckpt_dir = run_dir / "ckpt"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    dump_config(cfg, run_dir / "config.yaml")
    metrics, timer = MetricsLogger(run_dir), PhaseTimer()
    t_start = time.time()  # wall time of this invocation; earlier ones (before a resume) are in state
    state = latest[1] if latest else {"arms": {}, "timing": {}, "rm_version": 0}
    wall_before = state.get("wall_s", 0.0)

    def clock() -> float:  # the run's wall time so far, across resumes
        return wall_before + time.time() - t_start

    if latest:
        log.info("resuming from %s (%s)", latest[0].name, _where(state))
    started_ray = phases.ray_init(cfg)
    try:
        data = prepare_run_data(cfg)
        log.info("data: %d SFT demos, %d pool pairs, %d held-out pairs, %d train / %d eval prompts",
                 len(data.sft_prompts), len(data.pool), len(data.heldout), len(data.train_prompts),
                 len(data.eval_prompts))

        # ---- 1. SFT and the initial RM (skipped on resume: they are in the checkpoint)
        if "sft_path" not in state:
            base_policy, base_rm = phases.build_base_checkpoints(cfg, data, ckpt_dir)
            learner = PPOLearnerActor.options(num_cpus=cfg.resources.learner_num_cpus,
                                              num_gpus=cfg.resources.learner_num_gpus,
                                              resources=cfg.resources.learner_resources or None).remote(
                cfg.model_dump(), str(base_policy), cfg.resources.torch_threads, cfg.seed)
            log.info("SFT: %d demonstrations x %.1f epochs on the learner actor ...", len(data.sft_prompts),
                     cfg.sft.epochs if cfg.sft.enabled else 0)
            with timer("sft"):
                sft_metrics = {} if not cfg.sft.enabled else ray.get(
                    learner.sft.remote(data.sft_prompts, data.sft_responses))
                ray.get(learner.save.remote(str(ckpt_dir / "sft"), {"kind": "policy", "stage": "sft"}))
            ray.kill(learner)
            log.info("SFT: %s (%.1fs)", sft_metrics, timer.totals["sft"])
            rm0_pairs = phases.initial_rm_pairs(cfg, data)
            log.info("initial RM: Bradley-Terry fit on %d pairs x %.1f epochs with Ray Train (%d worker(s)) ...",
                     len(rm0_pairs), cfg.reward.init_epochs, cfg.reward.num_workers)
            with timer("rm_fit"):
                rm0 = phases.fit_rm(cfg, base_rm, ckpt_dir / "rm-v0", rm0_pairs, data.heldout,
                                    epochs=cfg.reward.init_epochs, lr=cfg.reward.lr, version=0,
                                    storage=run_dir / "ray_train", extra_meta={"iteration": 0, "stage": "initial"})
            log.info("initial RM: %d pairs, held-out accuracy %.3f (%.1fs)", len(rm0_pairs),
                     rm0.get("eval_accuracy", float("nan")), timer.totals["rm_fit"])
            state.update(sft_path="ckpt/sft", rm0_path="ckpt/rm-v0", sft=sft_metrics,
                         rm0={"records": len(rm0_pairs), "heldout": rm0.get("eval_accuracy")},
                         timing=_add_timing(state["timing"], timer))
            timer = PhaseTimer()
            state["wall_s"] = clock()
            write_latest(run_dir, ckpt_dir / "rm-v0", state)
            metrics.log({"phase": "base", **{f"sft/{k}": v for k, v in sft_metrics.items()},
                         "rm/heldout_accuracy": rm0.get("eval_accuracy"), "rm/records": len(rm0_pairs)}, step=0)

        # ---- the RM endpoint serves the newest RM for the rest of the run (serve.enabled)
        newest = state.get("published", {"path": state["rm0_path"], "version": 0})
        phases.start_serving(cfg, run_dir / newest["path"], newest["version"])

        # ---- 2. RL arms: vanilla baseline, then FRFT (or random-refit)
        filter_cache = phases.PoolEmbeddingCache(cfg, data.pool)
        for arm_idx, arm in enumerate(arms_of(cfg)):
            arm_state = state["arms"].setdefault(arm, {"iterations": [], "done": False})
            if arm_state["done"]:
                continue
            stop = _train_arm(cfg, run_dir, data, state, arm, arm_idx, metrics, filter_cache, clock)
            if stop:
                log.info("stopping after %s iteration %d as asked (frft.stop_after); resume with --resume %s",
                         arm, cfg.frft.stop_after, run_dir)
                return None

        # ---- 3. Evaluation on held-out prompts and the summary
        state["wall_s"] = clock()
        summary = _evaluate(cfg, run_dir, data, state)
        print_summary(summary)
        return summary
    finally:
        metrics.close()
        if started_ray:
            ray.shutdown()


def _train_arm(cfg, run_dir, data, state, arm, arm_idx, metrics, filter_cache, clock) -> bool:
    """Iterations 1..alpha of one arm. Returns True when frft.stop_after asks to stop here."""
    arm_state = state["arms"][arm]
    done_iters = len(arm_state["iterations"])
    prev = run_dir / arm_state["iterations"][-1]["path"] if done_iters else None
    rm_path = (prev / "rm").resolve() if prev else run_dir / state["rm0_path"]
    rm_version = arm_state["iterations"][-1]["rm_version"] if done_iters else 0
    sft_path = run_dir / state["sft_path"]

    learner = PPOLearnerActor.options(num_cpus=cfg.resources.learner_num_cpus,
                                      num_gpus=cfg.resources.learner_num_gpus,
                                              resources=cfg.resources.learner_resources or None).remote(
        cfg.model_dump(), str(sft_path), cfg.resources.torch_threads, cfg.seed + arm_idx)
    ray.get(learner.set_reference.remote(str(sft_path)))
    if prev:
        ray.get(learner.restore.remote(str(prev / "policy")))
    ray.get(learner.load_rm.remote(str(rm_path), rm_version))
    version = ray.get(learner.get_version.remote())
    pad_id = _pad_id(sft_path)
    pool = RolloutPool(str(sft_path), cfg.rollout, cfg.models.max_prompt_tokens, cfg.resources.torch_threads, pad_id)
    if version:
        pool.set_weights(learner.get_weights.remote(), version)
    try:
        for it in range(done_iters + 1, cfg.frft.alpha + 1):
            timer = PhaseTimer()
            rng = np.random.default_rng([cfg.seed, arm_idx, it])
            wanted = phases.requested_rollout_workers(run_dir)
            if wanted and wanted != pool.size:
                log.info("scaling rollout workers %d -> %d", pool.size, wanted)
                pool.resize(wanted)
            iter_dir = run_dir / "ckpt" / f"{arm}-iter-{it:03d}"
            iter_dir.mkdir(parents=True, exist_ok=True)

            # freeze the policy and sample what it writes now
            k_prompts = list(rng.choice(data.train_prompts, size=cfg.rollout.filter_prompts)) * cfg.rollout.samples_per_prompt
            with timer("generate"):
                samples = pool.generate(k_prompts, seed=int(rng.integers(1 << 30)))
                samples_b = pool.generate(k_prompts[: cfg.eval.onpolicy_pairs], seed=int(rng.integers(1 << 30)))
            record = {"arm": arm, "iteration": it, "path": phases.rel(run_dir, iter_dir),
                      "rollout_workers": pool.size, "samples": len(samples)}

            if arm in ("frft", "random-refit"):
                with timer("embed_filter"):
                    sel = phases.select_for_refit(cfg, data, filter_cache, arm, samples, seed=cfg.seed + it)
                chosen_pairs = [data.pool[i] for i in sel.indices]
                record.update(records=len(chosen_pairs), selection=sel.to_dict())
                if len(chosen_pairs) >= cfg.reward.num_workers:
                    rm_version = state["rm_version"] = state["rm_version"] + 1
                    init = run_dir / state["rm0_path"] if cfg.reward.refit_from == "initial" else rm_path
                    with timer("rm_fit"):
                        fit = phases.fit_rm(cfg, init, iter_dir / "rm", chosen_pairs, data.heldout,
                                            epochs=cfg.reward.refit_epochs, lr=cfg.reward.refit_lr,
                                            version=rm_version, storage=run_dir / "ray_train",
                                            extra_meta={"iteration": it, "arm": arm})
                    rm_path = iter_dir / "rm"
                    ray.get(learner.load_rm.remote(str(rm_path), rm_version))
                    phases.publish_rm(cfg, rm_path, rm_version)
                    state["published"] = {"path": phases.rel(run_dir, rm_path), "version": rm_version}
                    record.update(rm_heldout=fit.get("eval_accuracy"), rm_fit_loss=fit.get("train_loss"))
                else:
                    log.warning("[%s it %d] no pair passed the filter (threshold %.2f); keeping RM v%d",
                                arm, it, cfg.filter.threshold, rm_version)
                    _link_rm(iter_dir, rm_path)
                    record["rm_heldout"] = _last_heldout(state, arm)
                log.info("[%s it %d] selected %d of %d pairs; RM v%d held-out acc %s", arm, it, len(chosen_pairs),
                         len(data.pool), rm_version, _fmt(record["rm_heldout"]))
            else:
                _link_rm(iter_dir, rm_path)
                record.update(records=state["rm0"]["records"], rm_heldout=state["rm0"]["heldout"])
            record["rm_version"] = rm_version
            record.update(phases.rm_truth_accuracy(learner, data, samples, samples_b))

            # T PPO steps against the current RM
            scores, ppo_samples = [], 0
            for step in tqdm(range(cfg.frft.steps_per_iteration), desc=f"{arm} it {it} PPO", leave=False):
                prompts = list(rng.choice(data.train_prompts, size=cfg.ppo.batch_size))
                with timer("generate"):
                    batch = pool.generate(prompts, seed=int(rng.integers(1 << 30)))
                ppo_samples += len(batch)
                with timer("ppo"):
                    stats = ray.get(learner.train_step.remote(batch))
                with timer("sync"):
                    pool.set_weights(learner.get_weights.remote(), stats["policy_version"])
                scores.append(stats["ppo/score_mean"])
                global_step = (it - 1) * cfg.frft.steps_per_iteration + step + 1
                metrics.log({"arm": arm, "iteration": it, "step": global_step, **stats}, step=global_step,
                            prefix=f"{arm}/")
            record.update(score_first=scores[0], score_last=scores[-1], scores=scores, ppo_samples=ppo_samples)
            record["timing"] = {k: round(v, 3) for k, v in timer.totals.items()}
            state["timing"] = _add_timing(state["timing"], timer)

            with timer("checkpoint"):
                ray.get(learner.save.remote(str(iter_dir / "policy"),
                                            {"kind": "policy", "arm": arm, "iteration": it, "rm_version": rm_version}))
                arm_state["iterations"].append(record)
                arm_state["done"] = it == cfg.frft.alpha
                state["wall_s"] = clock()
                write_latest(run_dir, iter_dir, state)
            metrics.log({"arm": arm, "iteration": it, "records": record["records"],
                         "rm/heldout_accuracy": record["rm_heldout"], "rm/on_policy_accuracy": record["rm_on_policy"],
                         **timer.as_metrics()}, step=it, prefix=f"{arm}/iter/")
            log.info("[%s it %d/%d] rm v%d on-policy acc %s | score %.3f -> %.3f | %s", arm, it, cfg.frft.alpha,
                     rm_version, _fmt(record["rm_on_policy"]), scores[0], scores[-1],
                     " ".join(f"{k}={v:.1f}s" for k, v in timer.totals.items()))
            if cfg.frft.stop_after is not None and it >= cfg.frft.stop_after and not arm_state["done"]:
                return True
    finally:
        pool.shutdown()
        ray.kill(learner)
    return False


def _evaluate(cfg, run_dir, data, state) -> dict:
    pad_id = _pad_id(run_dir / state["sft_path"])
    prompts = data.eval_prompts[: cfg.eval.num_prompts]
    policies = {"sft": run_dir / state["sft_path"]}
    for arm, a in state["arms"].items():
        policies[arm] = run_dir / a["iterations"][-1]["path"] / "policy"
    t0 = time.time()
    judge = phases.make_judge(cfg, data, run_dir / state["rm0_path"])
    judged = {}
    for name, path in policies.items():
        responses = phases.evaluate_policy(cfg, path, prompts, pad_id)
        judged[name] = {"responses": responses, "scores": judge(prompts, responses)}
    state["timing"]["eval"] = state["timing"].get("eval", 0.0) + time.time() - t0
    wall = state.get("wall_s", 0.0) + time.time() - t0  # the run's wall time up to here, evaluation included
    summary = build_summary(cfg, state, prompts, judged, wall_s=wall)
    import json

    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
    write_report(summary, run_dir / "report.png")
    return summary


def _link_rm(iter_dir: Path, rm_path: Path) -> None:
    """The iteration's RM is unchanged: link to it rather than copy it."""
    link = iter_dir / "rm"
    if not link.is_symlink():
        link.symlink_to(os.path.relpath(rm_path, iter_dir))


def _last_heldout(state: dict, arm: str):
    its = state["arms"][arm]["iterations"]
    return its[-1]["rm_heldout"] if its else state["rm0"]["heldout"]


def _add_timing(total: dict, timer: PhaseTimer) -> dict:
    out = dict(total)
    for k, v in timer.totals.items():
        out[k] = round(out.get(k, 0.0) + v, 3)
    return out


def _pad_id(policy_path: Path) -> int:
    from frft_ray.models import load_tokenizer

    return load_tokenizer(str(policy_path)).pad_token_id


def _where(state: dict) -> str:
    done = [f"{arm}: {len(a['iterations'])} iteration(s)" + (" (done)" if a["done"] else "")
            for arm, a in state.get("arms", {}).items()]
    return "; ".join(done) or "SFT and initial RM done"


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.3f}"
