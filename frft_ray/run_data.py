"""Everything a run needs from its data, prepared once: SFT demos, the RM pool, held-out pairs,
PPO/filtering/eval prompts, and the judge (the gold reward on the benchmark, None elsewhere)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable

from frft_ray.config import RunConfig
from frft_ray.data.records import BadRecordError, LoadReport, PreferencePair

GoldFn = Callable[[list[str], list[str]], list[float]]


@dataclass
class RunData:
    sft_prompts: list[str]
    sft_responses: list[str]
    pool: list[PreferencePair]  # the RM's training pool (held-out pairs removed)
    heldout: list[PreferencePair]  # RM held-out accuracy against the data's own labels
    train_prompts: list[str]  # PPO and filtering prompts
    eval_prompts: list[str]  # never seen in training
    gold: GoldFn | None
    report: LoadReport
    heldout_gold: list[PreferencePair] | None = None  # benchmark: held-out pairs oriented by the gold reward
    heldout_policy_like: list[PreferencePair] | None = None  # ... only those in the policy's own style

    def tokenizer_corpus(self) -> list[str]:
        texts = [p + r for p, r in zip(self.sft_prompts, self.sft_responses)]
        for pair in self.pool[:20000]:
            texts += [pair.prompt + pair.chosen, pair.rejected]
        return texts


def prepare_run_data(cfg: RunConfig) -> RunData:
    rng = random.Random(cfg.seed)
    if cfg.data.format == "benchmark":
        from frft_ray.data.benchmark import POLICY_LIKE_SOURCE, gold_rewards, make_benchmark, relabel_by_gold

        bench = make_benchmark(cfg.data.benchmark)
        pool = list(bench.pool)
        rng.shuffle(pool)
        n_held = min(cfg.reward.heldout_pairs, len(pool) // 5)
        heldout, pool = pool[:n_held], pool[n_held:]
        heldout_gold = relabel_by_gold(heldout)
        report = LoadReport(path="benchmark", records=len(bench.pool))
        return RunData(
            sft_prompts=[d.prompt for d in bench.sft],
            sft_responses=[d.response for d in bench.sft],
            pool=pool,
            heldout=heldout,
            train_prompts=sorted({d.prompt for d in bench.sft}),
            eval_prompts=list(bench.eval_prompts),
            gold=gold_rewards,
            report=report,
            heldout_gold=heldout_gold,
            heldout_policy_like=[p for p in heldout_gold if p.source == POLICY_LIKE_SOURCE],
        )

    from frft_ray.data.loading import load_preferences

    pairs, report = load_preferences(cfg.data)
    if len(pairs) < 10:
        why = f" (skipped: {report.skipped}; is data.format={cfg.data.format} right?)" if report.skipped else ""
        raise BadRecordError(f"{cfg.data.path}: only {len(pairs)} usable preference pairs; need at least 10{why}")
    pairs = list(pairs)
    rng.shuffle(pairs)
    n_held = max(2, min(cfg.reward.heldout_pairs, int(len(pairs) * cfg.data.heldout_fraction)))
    heldout, pool = pairs[:n_held], pairs[n_held:]
    held_prompts = {p.prompt for p in heldout}
    train_prompts = sorted({p.prompt for p in pool} - held_prompts)
    return RunData(
        # without demonstrations, SFT imitates the preferred responses (a common choice for HH-RLHF)
        sft_prompts=[p.prompt for p in pool],
        sft_responses=[p.chosen for p in pool],
        pool=pool,
        heldout=heldout,
        train_prompts=train_prompts,
        eval_prompts=sorted(held_prompts)[: cfg.eval.num_prompts],
        gold=None,
        report=report,
    )
