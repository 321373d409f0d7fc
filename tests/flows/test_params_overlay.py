import pytest

from components.config import ParamsError, load_params
from flows.params_overlay import set_params
from tests.helpers import ROOT


@pytest.fixture
def params_file(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text((ROOT / "params.yaml").read_text())
    return path


def test_set_changes_value_and_keeps_comments(params_file):
    changed = set_params({"pretrain.max_steps": "77"}, params_file)
    assert changed == {"pretrain.max_steps": (600, 77)}
    assert load_params(params_file).pretrain.max_steps == 77
    assert "# Every knob of the pipeline lives here" in params_file.read_text()


def test_unknown_key_rejected_and_file_untouched(params_file):
    before = params_file.read_text()
    with pytest.raises(ParamsError, match="unknown params key 'pretrain.max_stepz'"):
        set_params({"pretrain.max_stepz": "3"}, params_file)
    assert params_file.read_text() == before


def test_invalid_value_rejected_and_file_untouched(params_file):
    before = params_file.read_text()
    with pytest.raises(ParamsError, match="greater than or equal to 1"):
        set_params({"pretrain.max_steps": "-3"}, params_file)
    assert params_file.read_text() == before
