"""The RM endpoint's pieces without HTTP: a bf16 inference snapshot, and which checkpoint
`frft-ray serve --run RUN_DIR` serves."""

import pytest

from serve import launch
from serve_checkpoints import PAIRS, ckpts, direct  # noqa: F401  (ckpts: a fixture)


def test_bf16_snapshot_scores_like_fp32(ckpts):
    """An inference snapshot in bf16 holds bf16 weights and returns fp32 floats close to the fp32 scores."""
    import torch

    from serve.scorer import load_snapshot, score_pairs

    snap = load_snapshot(ckpts[1], 1, device=torch.device("cpu"), dtype=torch.bfloat16)
    assert snap.info()["device"] == "cpu/bf16"
    assert {p.dtype for p in snap.model.parameters()} == {torch.bfloat16}
    scores = score_pairs(snap, [p for p, _ in PAIRS], [r for _, r in PAIRS])
    assert all(type(s) is float for s in scores)
    assert scores == pytest.approx(direct(ckpts[1], PAIRS), abs=0.05)


def test_run_dir_layout(tmp_path, ckpts):
    """`frft-ray serve --run RUN_DIR` serves RUN_DIR/<RUN_DIR/latest>/rm; a missing pointer is a clear error."""
    import shutil

    with pytest.raises(FileNotFoundError, match="latest"):
        launch.rm_checkpoint_for_run(tmp_path)
    shutil.copytree(ckpts[2], tmp_path / "iter_001" / "rm")
    (tmp_path / "latest").write_text("iter_001\n")
    assert launch.rm_checkpoint_for_run(tmp_path) == (tmp_path / "iter_001" / "rm").resolve()
