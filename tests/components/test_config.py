import pytest
import yaml
from pydantic import ValidationError

from components.config import ParamsError, load_params, params_hash, parse_params
from tests.helpers import ROOT


def raw_params() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def test_project_params_load():
    params = load_params(ROOT / "params.yaml")
    assert params.profile == "demo"
    assert params.model.hidden_size % params.model.num_attention_heads == 0


def test_unknown_key_is_named():
    raw = raw_params()
    raw["pretrain"]["max_stepz"] = 3
    with pytest.raises(ParamsError, match=r"pretrain\.max_stepz: unknown key"):
        parse_params(raw)


def test_bad_choice_names_key_and_value():
    raw = raw_params()
    raw["align"]["method"] = "ppo-please"
    with pytest.raises(ParamsError, match=r"align\.method.*'dpo'.*ppo-please"):
        parse_params(raw)


def test_heads_must_divide_hidden_size():
    raw = raw_params()
    raw["model"]["num_attention_heads"] = 3
    with pytest.raises(ParamsError, match="divisible"):
        parse_params(raw)


def test_params_are_frozen():
    params = load_params(ROOT / "params.yaml")
    with pytest.raises(ValidationError, match="frozen"):
        params.pretrain.max_steps = 1


def test_params_hash_changes_with_a_value():
    raw = raw_params()
    a = params_hash(parse_params(raw))
    raw["pretrain"]["lr"] = 0.5
    assert params_hash(parse_params(raw)) != a


@pytest.mark.parametrize("profile", ["smoke", "demo", "cluster", "smollm2"])
def test_every_profile_yields_valid_params(tmp_path, profile):
    from flows.params_overlay import apply_profile

    path = tmp_path / "params.yaml"
    path.write_text((ROOT / "params.yaml").read_text())
    apply_profile(profile, path)
    assert load_params(path).profile == profile


def test_demo_profile_restores_every_key_other_profiles_change(tmp_path):
    from flows.params_overlay import apply_profile

    path = tmp_path / "params.yaml"
    original = (ROOT / "params.yaml").read_text()
    path.write_text(original)
    apply_profile("smoke", path)
    apply_profile("cluster", path)
    apply_profile("smollm2", path)  # sets the shape keys to null: demo puts them back
    apply_profile("demo", path)
    assert load_params(path) == load_params(ROOT / "params.yaml")


def test_rule_sets_override_the_section_per_source():
    cfg = load_params(ROOT / "params.yaml").curate
    structured = cfg.for_rule_set(cfg.rule_set_of("pydocs"))
    assert cfg.rule_set_of("pydocs") == "structured" and cfg.rule_set_of("web") == "default"
    assert structured.max_duplicate_line_fraction is None
    assert structured.min_words == cfg.min_words  # what a set does not name, it inherits
    assert cfg.for_rule_set("default") is cfg


@pytest.mark.parametrize(
    "change, message",
    [
        ({"rule_sets": {"code": {"min_wordz": 3}}}, r"rule_sets\.code: \['min_wordz'\]"),
        ({"rule_sets": {"code": {"near_dedup": {}}}}, r"cannot be set per source"),
        ({"rule_sets": {"code": {"min_alpha_ratio": 3}}}, r"rule_sets\.code: .*min_alpha_ratio"),
        ({"source_rule_set": {"pydocs": "typo"}}, r"names rule sets \['typo'\]"),
    ],
)
def test_bad_rule_sets_are_named(change, message):
    raw = raw_params()
    raw["curate"].update(change)
    with pytest.raises(ParamsError, match=message):
        parse_params(raw)
