"""The whole FRFT loop on Ray, end to end, on the micro config (real Ray, real tiny models)."""

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from frft_ray.config import load_config
from frft_ray.summary import PEAK_WINDOW

RUNS = Path(os.environ["FRFT_TEST_RUNS"])


def _run(cfg, run_dir, resume=False):
    from frft_ray import driver

    return driver.run(cfg, run_dir, resume=resume)


ALL_ARMS = ("vanilla", "frft", "random_refit", "oracle")


@pytest.fixture(scope="module")
def micro_run(ray_local):
    """The micro config with every arm, listed out of order (they train vanilla, frft, random_refit, oracle),
    with weights reaching the rollout workers over a gloo collective (auto would use the object store on CPUs)
    (the refit RMs' scores reach PPO in the initial RM's units: ppo.score_scale=initial_rm, the default)."""
    run_dir = RUNS / "micro"
    shutil.rmtree(run_dir, ignore_errors=True)
    cfg = load_config("micro", ["frft.arms=[oracle, vanilla, frft, random_refit]", "rollout.weight_sync=collective",
                                "resources.progress_every_s=0.5"])
    summary = _run(cfg, run_dir)
    return cfg, run_dir, summary


@pytest.mark.slow
def test_micro_run_writes_checkpoints_metrics_and_summary(micro_run):
    cfg, run_dir, summary = micro_run
    on_disk = json.loads((run_dir / "summary.json").read_text())
    assert list(on_disk["gold_reward"]) == ["sft", *ALL_ARMS]
    pairs = ["oracle_vs_frft", "oracle_vs_random_refit", "oracle_vs_vanilla", "frft_vs_random_refit",
             "frft_vs_vanilla", "random_refit_vs_vanilla"]
    assert set(on_disk["win_rate"]) == set(pairs) | {f"{a}_vs_sft" for a in ALL_ARMS}
    for w in on_disk["win_rate"].values():
        lo, hi = w["ci95"]
        assert 0 <= lo <= w["estimate"] <= hi <= 1
    assert on_disk["reward"]["oracle"] == "gold reward" and on_disk["reward"]["vanilla"] == "initial RM"
    timing = on_disk["timing_s"]
    assert timing.keys() >= {"generate", "embed_filter", "rm_fit", "ppo", "sync", "total"}
    # micro's 1-thread roles fit the 2 CPUs, so SFT and the initial RM ran side by side within `base`
    base = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()][0]
    assert base["phase"] == "base" and base["base/overlap"] is True
    assert timing["base"] >= timing["sft"] and timing["total"] >= timing["base"] + timing["ppo"]
    latest = (run_dir / "latest").read_text().strip()
    assert latest == f"ckpt/oracle-iter-{cfg.frft.alpha:03d}"
    for arm in ("vanilla", "frft", "random_refit"):
        for it in range(1, cfg.frft.alpha + 1):
            d = run_dir / "ckpt" / f"{arm}-iter-{it:03d}"
            assert (d / "policy" / "model.safetensors").exists() and (d / "policy" / "learner_state.pt").exists()
            assert (d / "rm" / "model.safetensors").exists() and (d / "driver_state.json").exists()
    oracle_last = run_dir / "ckpt" / f"oracle-iter-{cfg.frft.alpha:03d}"
    assert (oracle_last / "policy" / "model.safetensors").exists() and not (oracle_last / "rm").exists()
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert any("timing/ppo" in x for x in lines) and any("ppo/policy_loss" in x for x in lines)
    # after every iteration the rollout workers held the learner's weights, bit for bit (collective sync)
    key = "rollout/weights_verified"
    verified = [(x["arm"], x["iteration"], x[key]) for x in lines if key in x]
    assert verified == [(a, it, 1) for a in ALL_ARMS for it in range(1, cfg.frft.alpha + 1)]
    assert list((run_dir / "tb").glob("events.out.tfevents.*"))
    assert (run_dir / "report.png").stat().st_size > 10_000
    # SFT and the initial RM beside it said how far they got while the driver waited (progress_every_s=0.5)
    log_text = (run_dir / "run.log").read_text()
    for label, total in (("SFT steps", summary["sft"]["steps"]), ("RM v0 fit steps", None)):
        seen = re.findall(rf"{label}: (\d+)/(\d+) \(\d+%\), \d+ s", log_text)
        assert seen and all(int(d) <= int(t) for d, t in seen), label
        assert total is None or {int(t) for _, t in seen} == {total}


@pytest.mark.slow
def test_rm_accuracy_above_chance(micro_run):
    cfg, run_dir, s = micro_run
    # against the data's own (noisy, biased) labels, every RM beats a coin
    assert s["initial_rm"]["heldout"] > 0.5
    for acc in s["rm_accuracy"]["frft"]:
        assert acc["heldout"] > 0.5
    # accuracies against the truth (gold reward) are reported for every RM
    for acc in [s["rm_accuracy"]["vanilla"], *s["rm_accuracy"]["frft"]]:
        assert 0 <= acc["on_policy"] <= 1 and 0 <= acc["heldout_gold"] <= 1
    # vanilla keeps one RM: its held-out accuracies, measured once, are in every iteration's record
    state = json.loads((run_dir / "ckpt" / f"vanilla-iter-{cfg.frft.alpha:03d}" / "driver_state.json").read_text())
    vanilla = state["arms"]["vanilla"]["iterations"]
    assert len(vanilla) == cfg.frft.alpha and {r["rm_version"] for r in vanilla} == {0}
    assert len({(r["rm_heldout_gold"], r["rm_heldout_policy_like"]) for r in vanilla}) == 1
    assert 0 <= vanilla[-1]["rm_heldout_gold"] <= 1


@pytest.mark.slow
def test_rm_records_per_arm(micro_run):
    """vanilla: the initial RM's pairs; frft: its selections; random_refit: as many random pairs as frft
    selected in the same iteration; oracle: no RM at all (PPO against the gold reward)."""
    cfg, _, s = micro_run
    assert s["rm_records"]["vanilla"] == s["initial_rm"]["records"] > cfg.filter.budget
    assert len(s["rm_records"]["frft"]) == cfg.frft.alpha and all(r > 0 for r in s["rm_records"]["frft"])
    assert s["rm_records"]["random_refit"] == s["rm_records"]["frft"]
    assert s["random_refit_size_from"] == "frft"
    for sel in s["selection"]["random_refit"]:
        assert sel["strategy"] == "random-k" and sel["threshold"] is None and sel["size_from"] == "frft"
    assert s["rm_records"]["oracle"] == 0 and s["rm_accuracy"]["oracle"] == {}
    assert all(acc["heldout"] is not None for acc in s["rm_accuracy"]["random_refit"])
    # the oracle's PPO reward is the gold reward, which the evaluation uses too
    assert len(s["rm_score"]["oracle"]) == cfg.frft.alpha * cfg.frft.steps_per_iteration


@pytest.mark.slow
def test_over_optimisation_curves_and_peak_gold_per_arm(micro_run):
    """KL(pi || SFT) and the batch's gold reward at every PPO step of every arm; each arm's peak."""
    cfg, run_dir, s = micro_run
    steps = cfg.frft.alpha * cfg.frft.steps_per_iteration
    assert set(s["curves"]) == set(ALL_ARMS) == set(s["peak_gold"])
    for arm, c in s["curves"].items():
        assert len(c["kl"]) == len(c["gold"]) == steps
        # a sampled KL estimate (one batch can dip below 0): 0 at step 1, where the policy is SFT, then it drifts
        assert abs(c["kl"][0]) < 1e-3 and max(c["kl"]) > 0
        # the peak is the best mean over `window` consecutive batches, centred on `step`; `raw` the best batch
        p, w = s["peak_gold"][arm], min(PEAK_WINDOW, steps)
        lo = p["step"] - 1 - w // 2
        assert p["window"] == w and p["raw"] == max(c["gold"])
        assert p["gold"] == pytest.approx(np.mean(c["gold"][lo:lo + w])) and p["kl"] == pytest.approx(np.mean(c["kl"][lo:lo + w]))
        assert p["gold"] == pytest.approx(max(np.mean(c["gold"][j:j + w]) for j in range(steps - w + 1)))
    # the oracle's PPO reward is the gold reward: its curve is the score it trained on
    assert s["curves"]["oracle"]["gold"] == pytest.approx(s["rm_score"]["oracle"], abs=1e-5)
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert sum(x.get("arm") == "frft" and "gold/mean" in x for x in lines) == steps


@pytest.mark.slow
def test_rm_score_of_policy_samples_rose_over_ppo(micro_run):
    _, _, s = micro_run
    scores = s["rm_score"]["vanilla"]  # one fixed RM, so scores are comparable across steps
    k = max(1, len(scores) // 3)
    assert sum(scores[-k:]) / k > sum(scores[:k]) / k


@pytest.mark.slow
def test_refit_rms_reach_ppo_in_the_initial_rms_units(micro_run):
    """ppo.score_scale=initial_rm (the default): PPO saw each refit RM's scores times (initial RM's spread / its own) on the
    held-out responses, recomputed here from the checkpoints; vanilla's and the oracle's scores are untouched."""
    from frft_ray.models import load_reward_checkpoint, score
    from frft_ray.phases import spread_texts
    from frft_ray.run_data import prepare_run_data

    cfg, run_dir, s = micro_run
    assert set(s["score_scale"]) == {"frft", "random_refit"}
    prompts, responses = spread_texts(prepare_run_data(cfg))

    def spread(rm_dir):
        rm = load_reward_checkpoint(rm_dir)
        return score(rm.model, rm.tokenizer, prompts, responses, cfg.models.max_length).std(unbiased=False).item()

    rm0 = spread(run_dir / "ckpt" / "rm-v0")
    for arm in ("frft", "random_refit"):
        want = [rm0 / spread(run_dir / "ckpt" / f"{arm}-iter-{it:03d}" / "rm") for it in range(1, cfg.frft.alpha + 1)]
        assert s["score_scale"][arm] == pytest.approx(want, rel=1e-3)
    assert any(abs(f - 1) > 0.01 for f in s["score_scale"]["frft"])  # the refits did change the RM's spread
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    seen = {}
    for x in lines:
        if "ppo/score_scale" in x:
            seen.setdefault(x["arm"], {}).setdefault(x["iteration"], set()).add(x["ppo/score_scale"])
    assert all(v == {1.0} for arm in ("vanilla", "oracle") for v in seen[arm].values())
    assert [seen["frft"][it] for it in range(1, cfg.frft.alpha + 1)] == [{f} for f in s["score_scale"]["frft"]]


@pytest.mark.slow
def test_frft_selection_is_smaller_than_pool_and_respects_threshold_and_budget(micro_run):
    cfg, _, s = micro_run
    pool = cfg.data.benchmark.pool_size
    for rec, sel in zip(s["rm_records"]["frft"], s["selection"]["frft"]):
        assert 0 < rec <= cfg.filter.budget < pool
        assert sel["count"] == rec
        if sel["selection"] in ("threshold_and_budget", "per_generation"):
            assert sel["selected_score"]["min"] >= cfg.filter.threshold
        else:  # too few passed the threshold: topped up to filter.min_records by best similarity
            assert sel["selection"] == "budget" and rec == cfg.filter.min_records
        assert sum(sel["source_mix"].values()) == rec


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_resume_continues_from_iteration_two_with_live_endpoint(resumed_run):
    """Stop after iteration 1, scale rollout workers, resume: it continues at 2 and finishes, while the
    RM endpoint (serve.enabled) hot-swaps to each refit and its versions never go backwards
    (the run: tests/resumed_run.py)."""
    r = resumed_run
    run_dir = r.run_dir
    assert r.first is None and r.latest_after_stop == "ckpt/frft-iter-001" and not r.summary_after_stop
    assert r.scale_rc == 0
    assert r.summary is not None and (run_dir / "summary.json").exists()
    assert (run_dir / "latest").read_text().strip() == "ckpt/frft-iter-002"
    iters = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    iter_records = [x["iteration"] for x in iters if x.get("arm") == "frft" and "records" in x]
    assert iter_records == [1, 2]  # iteration 1 ran once, then 2: continued, not restarted
    state2 = json.loads((run_dir / "ckpt/frft-iter-002/driver_state.json").read_text())
    its = state2["arms"]["frft"]["iterations"]
    assert its[0] == r.state1["arms"]["frft"]["iterations"][0]
    assert [it["rollout_workers"] for it in its] == [1, 2]
    assert its[0]["samples"] == its[1]["samples"] and its[0]["ppo_samples"] == its[1]["ppo_samples"] > 0
    # the policy kept training: version after iteration 2 = 2 iterations x 2 steps
    meta = json.loads((run_dir / "ckpt/frft-iter-002/policy/meta.json").read_text())
    assert meta["policy_version"] == 4
    # resuming a finished run says so and does nothing
    assert r.again is None and r.cli_again_rc == 0
    # the endpoint followed every refit, forward only, and serves the last one
    assert r.score_status == 200 and r.score_version == 2
    # a refit RM is served with the token budget it was trained with (its checkpoint carries the run's config)
    assert r.model_info["max_length"] == load_config("micro").models.max_length == 96
    assert r.seen and r.seen == sorted(r.seen) and r.seen[-1] == 2


@pytest.mark.slow
def test_eval_cli_rejudges_a_finished_run(micro_run, capsys):
    from frft_ray.cli import main

    _, run_dir, summary = micro_run
    assert main(["eval", "--run", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "frft-ray summary" in out and "win rate frft_vs_vanilla" in out
    again = json.loads((run_dir / "summary.json").read_text())
    assert again["gold_reward"].keys() == summary["gold_reward"].keys()
    # one policy against another on the same prompts, without a run folder
    sft, frft = run_dir / "ckpt" / "sft", run_dir / "ckpt" / "frft-iter-002" / "policy"
    assert main(["eval", "--config", "micro", "--policy", str(frft), "--baseline", str(sft)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["prompts"] == 48 and abs(out["mean_reward"] - summary["gold_reward"]["frft"]) < 1e-6
    assert abs(out["baseline_mean_reward"] - summary["gold_reward"]["sft"]) < 1e-6
    assert out["win_rate"]["estimate"] == summary["win_rate"]["frft_vs_sft"]["estimate"]


def test_scale_cli_rejects_bad_input(tmp_path, capsys):
    from frft_ray.cli import main

    assert main(["scale", str(tmp_path), "--rollout-workers", "2"]) == 2
    assert "not a run folder" in capsys.readouterr().err
    (tmp_path / "config.yaml").write_text("seed: 0\n")
    assert main(["scale", str(tmp_path), "--rollout-workers", "0"]) == 2
    assert main(["scale", str(tmp_path), "--rollout-workers", "3"]) == 0
    assert json.loads((tmp_path / "control.json").read_text()) == {"rollout_workers": 3}


def test_two_rollout_workers_return_the_same_samples_in_order_as_one(ray_local, tmp_path):
    from actors.rollout_pool import RolloutPool
    from frft_ray.config import ModelsConfig, config_from_dict
    from frft_ray.models import build_policy, save_checkpoint, train_tokenizer

    texts = [f"\n\nHuman: How do I fold shape {i}?\n\nAssistant: Fold edge {i % 4} then press." for i in range(200)]
    tok = train_tokenizer(texts, 400, 96)
    save_checkpoint(tmp_path / "p", build_policy(ModelsConfig(tiny={"n_layer": 1, "n_embd": 32, "n_head": 2}), tok),
                    tok, None, {"kind": "policy"})
    prompts = [t.split(" Fold")[0] for t in texts[:11]]  # odd count: uneven shards
    outs = {}
    for n in (1, 2):
        cfg = config_from_dict({"rollout": {"num_workers": n, "batch_size": 4, "max_new_tokens": 6},
                                "models": {"max_prompt_tokens": 48}, "resources": {"torch_threads": 1},
                                "placement": {"rollout": {"num_cpus": 0.25}}})
        pool = RolloutPool(str(tmp_path / "p"), cfg, tok.pad_token_id)
        try:
            assert pool.size == n
            outs[n] = pool.generate(prompts, greedy=True)
        finally:
            pool.shutdown()
    assert len(outs[1]) == len(outs[2]) == len(prompts)
    assert outs[1].prompts == outs[2].prompts == prompts
    assert outs[1].responses == outs[2].responses  # greedy: the same text, in the same order
