"""`frft-ray run | sft | train-rm | eval | scale`."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from frft_ray.cli_common import CLIError, add_config_args


def _setup_logging() -> None:
    """INFO lines to stderr (each run also writes its own run.log: tracking.RunLog)."""
    from frft_ray.tracking import RunLog

    root = logging.getLogger("frft_ray")
    root.setLevel(logging.INFO)
    root.propagate = False
    if not any(isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler) for h in root.handlers):
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(RunLog.FORMAT)
        root.addHandler(h)


def register(sub) -> None:
    p = sub.add_parser("run", help="run the whole FRFT loop (default: the offline demo)")
    add_config_args(p)
    p.add_argument("--out", default=None, help="run folder (default: the config's out_dir)")
    p.add_argument("--resume", default=None, metavar="RUN_DIR", help="continue a run after its last complete iteration")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("sft", help="supervised fine-tuning of the policy only; saves a policy checkpoint")
    add_config_args(p)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_sft)

    p = sub.add_parser("train-rm", help="train a reward model on the configured data (Ray Train)")
    add_config_args(p)
    p.add_argument("--out", required=True)
    p.add_argument("--init", default=None, help="start from this RM checkpoint (default: a fresh model)")
    p.set_defaults(func=cmd_train_rm)

    p = sub.add_parser("eval", help="judge a run's policies (or one policy checkpoint) on held-out prompts")
    add_config_args(p)
    p.add_argument("--run", default=None, help="run folder: re-evaluate its policies and rewrite summary.json")
    p.add_argument("--policy", default=None, help="a policy checkpoint folder")
    p.add_argument("--baseline", default=None, help="a second policy checkpoint to compare against")
    p.add_argument("--judge-rm", default=None, help="RM checkpoint that judges --policy when the data has no gold reward")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("scale", help="ask a running driver to resize its rollout pool at the next iteration",
                       description="Resize a run's rollout pool: the run's driver applies it at its next iteration "
                       "boundary (a stopped or crashed run: when resumed). Nothing else of the run changes.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="the run's folder")
    p.add_argument("--rollout-workers", type=int, required=True, metavar="N", help="rollout workers from then on (>= 1)")
    p.set_defaults(func=cmd_scale)


def _saved_config(run_dir: Path, flag: str) -> Path:
    """A run folder's config.yaml; CLIError naming `flag` when `run_dir` is not a run folder."""
    saved = run_dir / "config.yaml"
    if not saved.exists():
        raise CLIError(f"{flag} {run_dir}: no config.yaml there: it is not a run folder")
    return saved


def cmd_run(args) -> int:
    from frft_ray import driver
    from frft_ray.config import load_config

    if args.resume:
        run_dir = Path(args.resume)
        # a resumed run finishes unless told again where to stop
        cfg = load_config(_saved_config(run_dir, "--resume"), ["frft.stop_after=null", *args.overrides])
    else:
        cfg = load_config(args.config, args.overrides)
        run_dir = Path(args.out or cfg.out_dir)
    _setup_logging()
    try:
        driver.run(cfg, run_dir, resume=bool(args.resume))
    except KeyboardInterrupt:  # the driver stopped its roles and Ray on the way out
        print(f"frft-ray: run interrupted; continue it after its last complete iteration with: "
              f"frft-ray run --resume {run_dir}", file=sys.stderr)
        return 130
    return 0


def cmd_sft(args) -> int:
    import torch

    from frft_ray.algorithms.sft import train_sft
    from frft_ray.config import load_config
    from frft_ray.models import build_policy, check_model_sources, load_tokenizer, save_checkpoint, train_tokenizer
    from frft_ray.run_data import prepare_run_data

    cfg = load_config(args.config, args.overrides)
    check_model_sources(cfg.models)
    _setup_logging()
    if cfg.resources.torch_threads:
        torch.set_num_threads(cfg.resources.torch_threads)
    data = prepare_run_data(cfg)
    m = cfg.models
    tok = (train_tokenizer(data.tokenizer_corpus(), m.tiny.vocab_size, m.max_length) if m.policy == "tiny"
           else load_tokenizer(m.policy, m.trust_remote_code))
    policy = build_policy(m, tok, cfg.seed)
    metrics = train_sft(policy, tok, data.sft_prompts, data.sft_responses, cfg.sft, max_length=m.max_length,
                        seed=cfg.seed, progress=True)
    save_checkpoint(args.out, policy, tok, cfg, {"kind": "policy", "stage": "sft", **metrics})
    print(json.dumps(metrics))
    return 0


def cmd_train_rm(args) -> int:
    from actors.reward_trainer import RMFitJob, fit_reward_model_ray
    from frft_ray import phases
    from frft_ray.config import load_config
    from frft_ray.models import check_model_sources
    from frft_ray.placement_check import ensure_placement
    from frft_ray.run_data import prepare_run_data

    cfg = load_config(args.config, args.overrides)
    _setup_logging()
    out = Path(args.out).resolve()
    if not args.init:
        check_model_sources(cfg.models)
    data = prepare_run_data(cfg)  # an unknown model or a bad record fails before Ray starts
    started = phases.ray_init(cfg)
    try:
        ensure_placement(cfg, roles=("reward_trainer",))
        init = Path(args.init) if args.init else phases.build_base_checkpoints(cfg, data, out.parent / (out.name + "-base"))[1]
        pairs = phases.initial_rm_pairs(cfg, data)
        job = RMFitJob(init_path=str(init), out_path=str(out), epochs=cfg.reward.init_epochs, lr=cfg.reward.lr,
                       version=0, seed=cfg.seed, meta={"kind": "rm", "version": 0, "stage": "train-rm"})
        metrics = fit_reward_model_ray(cfg, job, pairs, data.heldout, str(out.parent / "ray_train"))
    finally:
        if started:
            import ray

            ray.shutdown()
    print(json.dumps({"records": len(pairs), "heldout_accuracy": metrics.get("eval_accuracy"),
                      "train_loss": metrics.get("train_loss"), "checkpoint": str(out)}))
    return 0


def cmd_eval(args) -> int:
    from actors.rollout_pool import RolloutPool
    from frft_ray import phases
    from frft_ray.config import load_config
    from frft_ray.evaluation import win_rate
    from frft_ray.models import checkpoint_folder, load_tokenizer
    from frft_ray.run_data import prepare_run_data

    if not (args.run or args.policy):
        raise CLIError("eval needs --run RUN_DIR or --policy CKPT")
    # every checkpoint named is checked before Ray starts
    for what, path in (("policy", args.policy), ("policy", args.baseline), ("reward-model", args.judge_rm)):
        if path:
            checkpoint_folder(path, what)
    cfg = load_config(_saved_config(Path(args.run), "--run") if args.run else args.config, args.overrides)
    _setup_logging()
    started = phases.ray_init(cfg)
    try:
        data = prepare_run_data(cfg)
        if args.run:
            from frft_ray import driver

            # FileNotFoundError (-> "frft-ray: error: ...", exit 2) when the run has no completed iteration
            driver.evaluate_run(cfg, Path(args.run).resolve(), data)  # prints the summary table
            return 0
        pad = load_tokenizer(args.policy).pad_token_id
        prompts = data.eval_prompts[: cfg.eval.num_prompts]
        if data.gold is None and not args.judge_rm:
            raise CLIError("this data has no gold reward; pass --judge-rm RM_CHECKPOINT")
        judge = phases.make_judge(cfg, data, Path(args.judge_rm) if args.judge_rm else None)
        with RolloutPool(args.policy, cfg, pad) as pool:
            a = judge(prompts, phases.evaluate_policy(cfg, pool, Path(args.policy), prompts))
            out = {"policy": args.policy, "mean_reward": sum(a) / len(a), "prompts": len(prompts)}
            if args.baseline:
                b = judge(prompts, phases.evaluate_policy(cfg, pool, Path(args.baseline), prompts))
                out.update(baseline_mean_reward=sum(b) / len(b), win_rate=win_rate(a, b))
        print(json.dumps(out, indent=2))
        return 0
    finally:
        if started:
            import ray

            ray.shutdown()


def cmd_scale(args) -> int:
    run_dir = Path(args.run_dir)
    _saved_config(run_dir, "scale")
    if args.rollout_workers < 1:
        raise CLIError("--rollout-workers must be >= 1")
    if (run_dir / "summary.json").exists():
        raise CLIError(f"{run_dir} has finished (summary.json): no driver will resize its rollout pool")
    tmp = run_dir / "control.json.tmp"
    tmp.write_text(json.dumps({"rollout_workers": args.rollout_workers}))
    tmp.replace(run_dir / "control.json")
    print(f"requested {args.rollout_workers} rollout worker(s); the run's driver applies it at its next iteration "
          f"boundary (a stopped or crashed run: when resumed with frft-ray run --resume {run_dir})")
    return 0
