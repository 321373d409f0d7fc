import pytest
import yaml

from components.config import ParamsError, load_params
from flows.params_overlay import apply_profile, preview_params, set_params
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
    with pytest.raises(ParamsError, match="greater than or equal to 0"):
        set_params({"pretrain.max_steps": "-3"}, params_file)
    assert params_file.read_text() == before


def _profiles(path) -> dict:
    return yaml.safe_load(path.read_text())["profiles"]


def test_smoke_then_demo_gives_back_the_original_file(params_file):
    original = params_file.read_text()
    changed = apply_profile("smoke", params_file)
    assert changed["pretrain.max_steps"] == (600, 30)
    assert _profiles(params_file)["demo"]["pretrain"]["max_steps"] == 600  # the base, kept
    apply_profile("demo", params_file)
    assert params_file.read_text() == original  # values, comments and layout


def test_switching_between_profiles_round_trips(params_file):
    original = params_file.read_text()
    for profile in ("smoke", "cluster", "smoke", "demo"):
        apply_profile(profile, params_file)
        assert load_params(params_file).profile == profile
    assert params_file.read_text() == original


def test_cluster_after_smoke_is_the_base_plus_cluster(params_file, tmp_path):
    fresh = tmp_path / "fresh.yaml"
    fresh.write_text(params_file.read_text())
    apply_profile("smoke", params_file)
    apply_profile("cluster", params_file)
    apply_profile("cluster", fresh)
    assert load_params(params_file) == load_params(fresh)
    # A key only smoke changes is back to its base value.
    assert load_params(params_file).evaluate.max_examples == 200


def _leaves(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(_leaves(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def test_profiles_list_only_what_they_change():
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    profiles = raw.pop("profiles")
    base = _leaves(raw)
    assert "demo" not in profiles  # the base values are the demo profile
    for name, overlay in profiles.items():
        for key, value in _leaves(overlay).items():
            assert key in base, f"profiles.{name}.{key} is not a params key"
            assert base[key] != value, f"profiles.{name}.{key} restates the base value"


def test_user_edits_survive_a_profile_round_trip(params_file):
    # A base value no profile lists, and one that smoke changes.
    set_params({"curate.min_words": "50", "pretrain.max_steps": "800"}, params_file)
    apply_profile("smoke", params_file)
    assert load_params(params_file).pretrain.max_steps == 30
    apply_profile("demo", params_file)
    params = load_params(params_file)
    assert (params.curate.min_words, params.pretrain.max_steps) == (50, 800)


def test_an_edit_to_a_profile_value_gives_way_to_the_base_with_a_warning(params_file, caplog):
    apply_profile("smoke", params_file)
    set_params({"pretrain.max_steps": "40"}, params_file)
    apply_profile("demo", params_file)
    assert load_params(params_file).pretrain.max_steps == 600
    assert "pretrain.max_steps is 40, not 30 as profile smoke set it" in caplog.text


def test_preview_does_not_write(params_file):
    before = params_file.read_text()
    assert preview_params(params_file, "smoke").pretrain.max_steps == 30
    apply_profile("smoke", params_file)
    assert preview_params(params_file, "demo").pretrain.max_steps == 600
    assert preview_params(params_file, "cluster").evaluate.max_examples == 200
    assert params_file.read_text() != before  # only apply_profile wrote


def test_unknown_profile_is_rejected_and_file_untouched(params_file):
    before = params_file.read_text()
    with pytest.raises(ParamsError, match="profile 'huge' is not defined"):
        apply_profile("huge", params_file)
    assert params_file.read_text() == before
