import pytest
import torch.distributed as dist

from components.training.checkpoints import (
    FINGERPRINT_FILE,
    WORLD_FILE,
    WorldSizeChanged,
    prepare_checkpoints,
)


@pytest.fixture(autouse=True)
def one_rank_group(tmp_path):
    dist.init_process_group(
        "gloo", rank=0, world_size=1, init_method=f"file://{tmp_path / 'rendezvous'}"
    )
    yield
    dist.destroy_process_group()


def checkpointed(ckpt, fingerprint="fp1", world=2):
    (ckpt / "step10").mkdir(parents=True)
    (ckpt / "latest").write_text("step10")
    (ckpt / FINGERPRINT_FILE).write_text(fingerprint)
    (ckpt / WORLD_FILE).write_text(str(world))
    (ckpt / "history.jsonl").write_text('{"step": 1}\n')
    (ckpt / "ds_config.json").write_text("{}")  # written by the stage for this run


def test_fresh_directory_is_prepared_without_deleting_the_stage_files(tmp_path):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "ds_config.json").write_text("{}")
    prepare_checkpoints(ckpt, "fp1", 0, 1, ckpt / "history.jsonl")
    assert (ckpt / "ds_config.json").exists()
    assert (ckpt / FINGERPRINT_FILE).read_text() == "fp1" and (ckpt / WORLD_FILE).read_text() == "1"


def test_same_setup_keeps_checkpoints(tmp_path):
    ckpt = tmp_path / "ckpt"
    checkpointed(ckpt, world=1)
    prepare_checkpoints(ckpt, "fp1", 0, 1, ckpt / "history.jsonl")
    assert (ckpt / "latest").exists() and (ckpt / "history.jsonl").exists()


def test_changed_setup_clears_checkpoints_and_history_only(tmp_path):
    ckpt = tmp_path / "ckpt"
    checkpointed(ckpt, world=1)
    prepare_checkpoints(ckpt, "fp2", 0, 1, ckpt / "history.jsonl")
    assert not (ckpt / "latest").exists() and not (ckpt / "step10").exists()
    assert not (ckpt / "history.jsonl").exists()
    assert (ckpt / "ds_config.json").exists() and (ckpt / FINGERPRINT_FILE).read_text() == "fp2"


def test_changed_rank_count_raises_and_keeps_everything(tmp_path):
    ckpt = tmp_path / "ckpt"
    checkpointed(ckpt, world=2)
    with pytest.raises(WorldSizeChanged, match="written by 2 ranks but this run has 1"):
        prepare_checkpoints(ckpt, "fp1", 0, 1, ckpt / "history.jsonl")
    assert (ckpt / "latest").exists() and (ckpt / "step10").exists()
