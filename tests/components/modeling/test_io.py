"""A corrupt weights file is named, with the commands that restore it."""

import pytest
import torch
from safetensors.torch import save_file

from components.modeling.io import CorruptArtifact, check_weights


def test_truncated_safetensors_is_named_with_how_to_restore(tmp_path):
    model = tmp_path / "models" / "sft"
    model.mkdir(parents=True)
    save_file({"w": torch.zeros(256)}, model / "model.safetensors")
    assert check_weights(model) == [model / "model.safetensors"]
    data = (model / "model.safetensors").read_bytes()
    (model / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptArtifact) as err:
        check_weights(model)
    message = str(err.value)
    assert str(model / "model.safetensors") in message
    assert f"dvc checkout --force {model}" in message and "dvc repro --force" in message
