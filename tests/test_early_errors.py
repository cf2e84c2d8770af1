"""Mistakes a run can see before Ray starts fail at once, on one line, through the CLI."""

import json

import pytest

from frft_ray.cli import main


def _ray_was_not_started(out) -> bool:
    return not (out / "ray_train").exists() and not (out / "latest").exists()  # no RM trainer, no checkpoint


def test_an_uncached_hub_model_offline_says_what_was_looked_up_and_how_to_get_it(tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["run", "--config", "micro", "--out", str(out), "--set", "models.policy=frft-tests/not-cached-model"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith("frft-ray: error: models.policy=frft-tests/not-cached-model: not a local folder")
    assert "looked up frft-tests/not-cached-model/config.json" in err and "HF_HUB_OFFLINE=1" in err
    assert "hf download frft-tests/not-cached-model" in err and "local folder holding config.json" in err
    assert _ray_was_not_started(out)


def test_a_model_folder_without_config_is_named(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    rc = main(["sft", "--config", "micro", "--out", str(tmp_path / "p"), "--set", f"models.reward={tmp_path / 'empty'}"])
    err = capsys.readouterr().err
    assert rc == 2 and f"models.reward={tmp_path / 'empty'}: no model folder there (config.json missing)" in err


def test_a_bad_data_file_fails_before_ray_naming_file_and_line(tmp_path, capsys):
    good = {"prompt": "Human: hi", "chosen": " hello", "rejected": " go away"}
    data = tmp_path / "prefs.jsonl"
    data.write_text("\n".join([json.dumps(good)] * 2 + ['{"prompt": "Human: hi", "chosen": 3}'] + [json.dumps(good)] * 20))
    out = tmp_path / "run"
    rc = main(["run", "--config", "micro", "--out", str(out), "--set", "data.format=jsonl", "--set", f"data.path={data}"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert f"{data}:3: " in err and "data.on_bad_record=skip" in err
    assert _ray_was_not_started(out)


def test_too_few_usable_pairs_is_a_one_line_data_error(tmp_path, capsys):
    data = tmp_path / "few.jsonl"
    data.write_text(json.dumps({"prompt": "Human: hi", "chosen": " hello", "rejected": " go away"}) + "\n")
    rc = main(["run", "--config", "micro", "--out", str(tmp_path / "run"), "--set", "data.format=jsonl",
               "--set", f"data.path={data}"])
    assert rc == 2 and "only 1 usable preference pairs; need at least 10" in capsys.readouterr().err


def test_command_line_mistakes_fail_in_seconds_naming_what_to_change(tmp_path, capsys):
    """Every one of these fails before Ray starts (no traceback, one line, exit 2)."""
    run = tmp_path / "finished"
    run.mkdir()
    (run / "config.yaml").write_text("seed: 0\n")
    (run / "summary.json").write_text("{}")
    cases = [
        (["run", "--set", "filter.threshold=2"], "with --set filter.threshold=2):"),  # the override, not the file
        (["serve", "--checkpoint", str(tmp_path), "--port", "99999"], "--port 99999: Input should be less than"),
        (["serve", "--checkpoint", str(tmp_path), "--replicas", "0"], "--replicas 0: Input should be greater"),
        (["serve", "--checkpoint", str(tmp_path / "nowhere")], "no reward-model checkpoint at"),
        (["serve", "--checkpoint", str(tmp_path), "--host", "0.0.0.0"], "but no token is set"),
        (["eval", "--policy", str(tmp_path / "nowhere")], "no policy checkpoint at"),
        (["eval", "--run", str(tmp_path)], "not a run folder"),
        (["score", "--url", "127.0.0.1:8000/x", "p", "r"], "needs http:// or https://"),
        (["score", "--state-file", str(tmp_path / "none.json"), "p", "r"], "pass --url (no running server recorded"),
        (["scale", str(run), "--rollout-workers", "2"], "has finished (summary.json)"),
        (["submit", "--address", "http://127.0.0.1:9", "--set", "ppo.kl_coef=-1"], "with --set ppo.kl_coef=-1):"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("frft-ray: error: ") and message in err and "Traceback" not in err, (argv, err)
    assert not (run / "control.json").exists()


def test_an_empty_job_id_is_refused_by_the_parser(capsys):
    """`jobs status ""` would ask the cluster for every job (the API reads "" as a list): refused, exit 2."""
    with pytest.raises(SystemExit) as exit_info:
        main(["jobs", "status", "", "--address", "http://127.0.0.1:9"])
    assert exit_info.value.code == 2 and "a job id is not empty" in capsys.readouterr().err
