"""Mistakes a run can see before Ray starts fail at once, on one line, through the CLI."""

import json

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
