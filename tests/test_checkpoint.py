"""Checkpoints: atomic round trip, checksum, corrupt-file fallback, pruning."""

import warnings

import pytest
import torch

from lifelong.checkpoint import CheckpointDir, CheckpointError, load_checkpoint, save_checkpoint


def payload(step):
    return {"step": step, "weights": torch.arange(10.0) * step, "nested": {"a": [1, 2], "b": "x"}}


def test_round_trip_plain_containers(tmp_path):
    path = save_checkpoint(tmp_path / "c.pt", payload(3))
    back = load_checkpoint(path)
    assert back["step"] == 3
    torch.testing.assert_close(back["weights"], torch.arange(10.0) * 3)
    assert back["nested"] == {"a": [1, 2], "b": "x"}
    assert not list(tmp_path.glob(".*tmp*"))


def test_truncated_and_flipped_files_are_detected(tmp_path):
    path = save_checkpoint(tmp_path / "c.pt", payload(1))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        load_checkpoint(path)
    flipped = bytearray(data)
    flipped[-5] ^= 0xFF
    path.write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        load_checkpoint(path)
    path.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="bad header"):
        load_checkpoint(path)


class Custom:
    pass


def test_objects_outside_weights_only_are_refused(tmp_path):
    with pytest.raises(CheckpointError, match=r"payload.a\[1\]: Custom is not allowed"):
        save_checkpoint(tmp_path / "c.pt", {"a": [1, Custom()]})
    assert not (tmp_path / "c.pt").exists()


def test_latest_falls_back_to_previous_good_with_warning(tmp_path):
    ckpts = CheckpointDir(tmp_path, keep=5)
    ckpts.save(100, payload(100))
    newest = ckpts.save(200, payload(200))
    newest.write_bytes(newest.read_bytes()[:-10])
    # an interrupted write leaves only a temporary file, which is never read
    (tmp_path / ".step_000000000300.pt.tmp-1").write_bytes(b"partial")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        path, back = ckpts.latest()
    assert back["step"] == 100
    assert path.name == "step_000000000100.pt"
    assert any("step_000000000200.pt" in str(w.message) for w in caught)


def test_pruning_keeps_newest(tmp_path):
    ckpts = CheckpointDir(tmp_path, keep=2)
    for step in (10, 20, 30):
        ckpts.save(step, payload(step))
    assert [p.name for p in ckpts.paths()] == ["step_000000000020.pt", "step_000000000030.pt"]
    assert CheckpointDir(tmp_path / "none").latest() is None
