"""Checkpoint folders are written whole or not at all, and loading a missing one names what is missing."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from frft_ray.config import ModelsConfig
from frft_ray.models import build_policy, load_policy_checkpoint, load_reward_checkpoint, read_meta, save_checkpoint, train_tokenizer

TINY = ModelsConfig(tiny={"n_layer": 1, "n_embd": 32, "n_head": 2})
TEXTS = [f"Human: fold shape {i}. Assistant: fold edge {i % 4} then press." for i in range(200)]


@pytest.fixture(scope="module")
def tiny():
    tok = train_tokenizer(TEXTS, 300, 64)
    return build_policy(TINY, tok, seed=0), tok


def test_a_failed_write_keeps_the_old_checkpoint_and_leaves_no_temp_folder(tmp_path, tiny):
    model, tok = tiny
    path = tmp_path / "policy"
    save_checkpoint(path, model, tok, None, {"kind": "policy", "version": 1})

    def fail(folder: Path):
        assert (folder / "model.safetensors").exists()  # the model is written, then the write fails
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, model, tok, None, {"kind": "policy", "version": 2}, write_extra=fail)
    assert read_meta(path)["version"] == 1 and load_policy_checkpoint(path).meta["version"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["policy"]

    save_checkpoint(path, model, tok, None, {"kind": "policy", "version": 3},
                    write_extra=lambda folder: (folder / "extra.txt").write_text("x"))
    assert read_meta(path)["version"] == 3 and (path / "extra.txt").read_text() == "x"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["policy"]  # the old folder was removed


CHILD = """
import sys, time
from pathlib import Path
from frft_ray.config import ModelsConfig
from frft_ray.models import build_policy, save_checkpoint, train_tokenizer
texts = [f"Human: fold shape {i}. Assistant: fold edge {i % 4} then press." for i in range(200)]
tok = train_tokenizer(texts, 300, 64)
model = build_policy(ModelsConfig(tiny={"n_layer": 1, "n_embd": 32, "n_head": 2}), tok, seed=1)
def hang(folder):
    print("writing", flush=True)
    time.sleep(600)
save_checkpoint(Path(sys.argv[1]), model, tok, None, {"kind": "policy", "version": 2}, write_extra=hang)
"""


def test_a_process_killed_mid_write_leaves_the_previous_checkpoint_whole(tmp_path, tiny):
    model, tok = tiny
    path = tmp_path / "policy"
    save_checkpoint(path, model, tok, None, {"kind": "policy", "version": 1})
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(path)], stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        assert child.stdout.readline().strip() == "writing"  # mid-write: model files written, meta not renamed
        os.kill(child.pid, signal.SIGKILL)
        child.wait(30)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == -signal.SIGKILL
    loaded = load_policy_checkpoint(path)
    assert loaded.meta["version"] == 1
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "policy"]
    assert len(leftovers) == 1 and leftovers[0].startswith(".policy.") and leftovers[0].endswith(".tmp")


def test_loading_an_incomplete_checkpoint_names_the_missing_file(tmp_path, tiny):
    model, tok = tiny
    save_checkpoint(tmp_path / "p", model, tok, None, {"kind": "policy"})
    (tmp_path / "p" / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"no policy checkpoint at .*/p \(model.safetensors missing\)"):
        load_policy_checkpoint(tmp_path / "p")
    with pytest.raises(FileNotFoundError, match=r"no reward-model checkpoint at .*/nowhere \(config.json, model"):
        load_reward_checkpoint(tmp_path / "nowhere")
