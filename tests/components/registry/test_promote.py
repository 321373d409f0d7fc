import json
import socket

import mlflow
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import TEMPORARILY_UNAVAILABLE
from pydantic import ValidationError

from components.config import GateRule, PromoteParams
from components.constants import ALIAS_CHALLENGER, ALIAS_CHAMPION, MODEL_POLICY, REGISTRY_RECORD
from components.failures import is_transient
from components.registry import audit, champion, promote, rollback
from components.tracking.stage_run import stage_run
from tests.helpers import project_params, stage_view

ACC = GateRule(better="higher", against="champion")
PPL = GateRule(better="lower", against="absolute", threshold=100.0)
CFG = PromoteParams(min_delta=0.0, gates={"eval_accuracy": ACC, "perplexity": PPL})


def test_no_champion_promotes_when_absolute_gates_pass():
    d = promote.decide(CFG, {"eval_accuracy": 0.1, "perplexity": 10}, None)
    assert d.promote
    assert [g.status for g in d.gates] == ["skip", "pass"]


def test_perplexity_gate_blocks():
    d = promote.decide(CFG, {"eval_accuracy": 0.9, "perplexity": 500}, None)
    assert not d.promote and "perplexity=500 > 100" in d.reason


def test_worse_accuracy_keeps_champion_and_says_why():
    d = promote.decide(
        CFG, {"eval_accuracy": 0.4, "perplexity": 10}, {"eval_accuracy": 0.5, "perplexity": 10}
    )
    assert not d.promote
    assert "eval_accuracy=0.4 <= champion 0.5 + 0" in d.reason


def test_a_tie_keeps_the_champion_unless_min_delta_allows_it():
    challenger, champion = {"eval_accuracy": 0.5, "perplexity": 10}, {"eval_accuracy": 0.5}
    assert not promote.decide(CFG, challenger, champion).promote
    assert promote.decide(CFG, {**challenger, "eval_accuracy": 0.5001}, champion).promote
    tolerant = CFG.model_copy(update={"min_delta": -0.01})
    assert promote.decide(tolerant, challenger, champion).promote


def test_per_gate_margin_overrides_min_delta_and_lower_is_better():
    cfg = PromoteParams(
        gates={
            "ppl": GateRule(metric="perplexity", better="lower", against="champion", threshold=1)
        }
    )
    assert promote.decide(cfg, {"perplexity": 8}, {"perplexity": 10}).promote
    assert not promote.decide(cfg, {"perplexity": 9}, {"perplexity": 10}).promote  # 9 !< 10 - 1


def test_a_champion_is_kept_unless_a_champion_gate_shows_the_challenger_better():
    # Only absolute gates: a challenger that passes them is not shown to be better.
    cfg = PromoteParams(gates={"perplexity": PPL})
    d = promote.decide(cfg, {"perplexity": 10}, {"perplexity": 50})
    assert not d.promote and "not shown to be better" in d.reason
    assert promote.decide(cfg, {"perplexity": 10}, None).promote  # no champion: bounds suffice


def test_a_missing_metric_never_passes():
    judge = GateRule(metric="judge.win_rate", better="higher", against="absolute", threshold=0.5)
    ok = {"eval_accuracy": 0.9, "perplexity": 10}
    cfg = CFG.model_copy(update={"gates": {**CFG.gates, "judge": judge}})
    d = promote.decide(cfg, ok, {"eval_accuracy": 0.5})
    assert not d.promote and "challenger has no judge.win_rate (if_missing=fail)" in d.reason
    skip = judge.model_copy(update={"if_missing": "skip"})
    cfg = CFG.model_copy(update={"gates": {**CFG.gates, "judge": skip}})
    d = promote.decide(cfg, ok, {"eval_accuracy": 0.5})
    assert d.promote and d.gates[-1].status == "skip"
    # Every gate skipped: nothing shows the challenger is better.
    only = PromoteParams(gates={"judge": skip})
    assert not promote.decide(only, ok, {"eval_accuracy": 0.5}).promote


def test_a_champion_without_the_metric_is_kept():
    d = promote.decide(CFG, {"eval_accuracy": 0.9, "perplexity": 10}, {"perplexity": 10})
    assert not d.promote and "champion has no recorded eval_accuracy" in d.reason


def test_absolute_gate_needs_a_threshold():
    with pytest.raises(ValidationError, match="needs a `threshold`"):
        GateRule(better="lower", against="absolute")


@pytest.fixture
def registry(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    return tmp_path


def _register_version(tmp_path, n: int) -> str:
    client = MlflowClient()
    if n == 1:
        client.create_registered_model(MODEL_POLICY)
    with mlflow.start_run() as run:
        mlflow.log_dict({"n": n}, "model/info.json")
    version = client.create_model_version(
        MODEL_POLICY, f"{run.info.artifact_uri}/model", run_id=run.info.run_id
    ).version
    policy = tmp_path / f"policy{n}"
    policy.mkdir()
    (policy / REGISTRY_RECORD).write_text(json.dumps({"name": MODEL_POLICY, "version": version}))
    return version


ITEMS = 20


def _predictions(path, correct: list[bool]) -> None:
    """reports/predictions.jsonl as evaluate writes it: the policy's rows and another model's."""
    rows = [
        {"model": model, "id": f"q{i}", "task": "add", "correct": ok if model == "policy" else 0}
        for model in ("sft", "policy")
        for i, ok in enumerate(correct)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _promote(
    tmp_path,
    n: int,
    accuracy: float,
    correct: list[bool] | None = None,
    gates=None,
    canary: bool = False,
) -> dict:
    """The promote stage on a challenger whose per-item results are `correct` (default: the
    first accuracy * ITEMS items right), with CFG's point-estimate gates unless `gates`;
    `canary`: deploy.canary.enabled."""
    correct = correct or [i < round(accuracy * ITEMS) for i in range(ITEMS)]
    canary_cfg = {**project_params().deploy.canary.model_dump(), "enabled": canary}
    params = project_params(promote={"gates": gates or CFG.gates}, deploy={"canary": canary_cfg})
    evaluation = tmp_path / f"eval{n}.json"
    evaluation.write_text(
        json.dumps({"eval_accuracy": accuracy, "perplexity": 20.0, "base.eval_accuracy": 0.0})
    )
    _predictions(tmp_path / f"predictions{n}.jsonl", correct)
    (tmp_path / "judge.json").write_text("{}")  # no judge numbers: gates not configured here
    (tmp_path / "safety.json").write_text(json.dumps({"toxicity_rate": 0.0}))
    paths = promote.Paths(
        policy=tmp_path / f"policy{n}",
        evaluation=evaluation,
        predictions=tmp_path / f"predictions{n}.jsonl",
        judge=tmp_path / "judge.json",
        safety=tmp_path / "safety.json",
        metrics=tmp_path / "m.json",
    )
    with stage_run("promote", stage_view("promote", params)) as tracker:
        return promote.run(tracker.params, paths, tracker).metrics


def test_run_moves_champion_only_when_gate_passes(registry):
    from components.tracking.mlflow_env import configure

    configure()
    v1 = _register_version(registry, 1)
    m1 = _promote(registry, 1, accuracy=0.5)
    client = MlflowClient()
    assert m1["promoted"] == 1
    assert client.get_model_version_by_alias(MODEL_POLICY, ALIAS_CHAMPION).version == v1

    v2 = _register_version(registry, 2)
    m2 = _promote(registry, 2, accuracy=0.3)
    assert m2["promoted"] == 0 and "gates failed (eval_accuracy)" in m2["reason"]
    assert client.get_model_version_by_alias(MODEL_POLICY, ALIAS_CHAMPION).version == v1
    assert client.get_model_version_by_alias(MODEL_POLICY, ALIAS_CHALLENGER).version == v2
    assert m2["previous_champion.eval_accuracy"] == 0.5

    # Re-running promote on the champion itself keeps it (no self-comparison).
    m3 = _promote(registry, 1, accuracy=0.5)
    assert m3["promoted"] == 1 and "already holds champion" in m3["reason"]


def test_with_the_canary_on_a_passing_challenger_waits_for_the_live_window(registry):
    from components.tracking.mlflow_env import configure

    configure()
    v1 = _register_version(registry, 1)
    first = _promote(registry, 1, accuracy=0.5, canary=True)
    assert first["verdict"] == "promoted" and first["champion_version"] == int(v1)  # none to canary

    v2 = _register_version(registry, 2)
    m = _promote(registry, 2, accuracy=0.9, canary=True)
    assert (m["verdict"], m["promoted"], m["champion_version"]) == ("canary", 0, int(v1))
    assert "live canary" in m["reason"]
    assert _aliases() == {ALIAS_CHAMPION: int(v1), ALIAS_CHALLENGER: int(v2)}
    assert _version_tags(v2)["promotion.verdict"] == "canary"

    _register_version(registry, 3)  # failing the offline gates never reaches the canary
    worse = _promote(registry, 3, accuracy=0.1, canary=True)
    assert worse["verdict"] == "kept" and _aliases()[ALIAS_CHAMPION] == int(v1)


def _aliases() -> dict:
    return dict(MlflowClient().get_registered_model(MODEL_POLICY).aliases)


def _champion_v1_challenger_v2(registry) -> dict:
    """v1 is champion; v2 is registered and waiting for promotion. Returns the aliases."""
    from components.tracking.mlflow_env import configure

    configure()
    _register_version(registry, 1)
    _promote(registry, 1, accuracy=0.5)
    _register_version(registry, 2)
    return _aliases()


class FailingRegistry:
    """The real client, except that reading the registry answers 503 (server overloaded)."""

    def __init__(self):
        self._client = MlflowClient()

    def __getattr__(self, name):
        return getattr(self._client, name)

    def get_registered_model(self, name):
        raise MlflowException("503 Service Unavailable", error_code=TEMPORARILY_UNAVAILABLE)

    get_model_version_by_alias = get_registered_model


def test_registry_outage_stops_promotion_and_leaves_aliases(registry, monkeypatch):
    before = _champion_v1_challenger_v2(registry)
    monkeypatch.setattr(promote, "MlflowClient", FailingRegistry)
    with pytest.raises(champion.RegistryUnavailable, match="TEMPORARILY_UNAVAILABLE") as caught:
        _promote(registry, 2, accuracy=0.9)  # would win the gate against the champion
    assert "promotion stopped with every alias unchanged" in str(caught.value)
    assert is_transient(caught.value)  # so `llmops stage` exits EXIT_TRANSIENT: a retry
    assert _aliases() == before == {ALIAS_CHAMPION: 1, ALIAS_CHALLENGER: 1}
    assert "eval.eval_accuracy" not in MlflowClient().get_model_version(MODEL_POLICY, "2").tags


def test_unreachable_registry_stops_promotion_and_leaves_aliases(registry, monkeypatch):
    before = _champion_v1_challenger_v2(registry)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the socket is
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setattr(
        promote, "MlflowClient", lambda: MlflowClient(tracking_uri=f"http://127.0.0.1:{port}")
    )
    with pytest.raises(champion.RegistryUnavailable, match="cannot read the champion alias"):
        _promote(registry, 2, accuracy=0.9)
    assert _aliases() == before


def test_no_champion_only_when_the_model_or_alias_does_not_exist(registry):
    from components.tracking.mlflow_env import configure

    configure()
    client = MlflowClient()
    assert champion.current_champion(client, MODEL_POLICY) is None  # no such model
    _register_version(registry, 1)
    assert champion.current_champion(client, MODEL_POLICY) is None  # model without the alias
    client.set_registered_model_alias(MODEL_POLICY, ALIAS_CHAMPION, "1")
    assert str(champion.current_champion(client, MODEL_POLICY).version) == "1"


def _version_tags(version: str) -> dict:
    return MlflowClient().get_model_version(MODEL_POLICY, version).tags


def test_every_decision_is_an_audit_record(registry):
    _champion_v1_challenger_v2(registry)
    _promote(registry, 2, accuracy=0.3)  # kept
    tags = _version_tags("2")
    assert tags["promotion.verdict"] == "kept"
    assert tags["promotion.champion_before"] == tags["promotion.champion_after"] == "1"
    assert tags["promotion.by"] and tags["promotion.at"].startswith("20")
    assert tags["promotion.git_commit"]  # "unknown" outside a project checkout
    gates = {g["gate"]: g["status"] for g in json.loads(tags["promotion.gates"])}
    assert gates == {"eval_accuracy": "fail", "perplexity": "pass"}
    assert json.loads(tags["promotion.thresholds"])["perplexity"]["threshold"] == 100.0
    run = MlflowClient().get_run(tags["promotion.run_id"])
    assert run.data.tags["promotion.verdict"] == "kept"
    assert run.data.tags["llmops.stage"] == "promote"
    decision = mlflow.artifacts.load_dict(f"{run.info.artifact_uri}/promotion/decision.json")
    assert decision["metrics"]["eval_accuracy"] == 0.3
    assert decision["champion_after"] == "1"


def test_a_champion_set_by_hand_is_kept_until_a_strictly_better_challenger(registry):
    _champion_v1_challenger_v2(registry)  # v1 champion at 0.5
    _promote(registry, 2, accuracy=0.7)
    assert _aliases()[ALIAS_CHAMPION] == 2
    MlflowClient().set_registered_model_alias(MODEL_POLICY, ALIAS_CHAMPION, "1")  # the UI
    _register_version(registry, 3)
    m = _promote(registry, 3, accuracy=0.5)  # ties the hand-set champion
    assert m["promoted"] == 0 and "eval_accuracy=0.5 <= champion 0.5" in m["reason"]
    assert _aliases()[ALIAS_CHAMPION] == 1
    m = _promote(registry, 3, accuracy=0.6)
    assert m["promoted"] == 1 and _aliases()[ALIAS_CHAMPION] == 3
    assert _version_tags("3")[audit.TAG_PREVIOUS_CHAMPION] == "1"


def test_rollback_restores_the_previous_champion_with_its_own_audit_record(registry):
    _champion_v1_challenger_v2(registry)
    _promote(registry, 2, accuracy=0.7)
    done = rollback.rollback(reason="bad answers in production")
    assert (done.from_version, done.to_version) == ("2", "1")
    assert _aliases() == {ALIAS_CHAMPION: 1, ALIAS_CHALLENGER: 2}
    tags = _version_tags("2")
    assert tags["promotion.verdict"] == "rolled_back"
    assert tags["promotion.reason"] == "bad answers in production"
    assert audit.TAG_ROLLED_BACK in tags
    assert _version_tags("1")["promotion.verdict"] == "restored"
    run = MlflowClient().get_run(done.run_id)
    assert run.info.run_name == "promote-rollback"
    assert run.data.tags["promotion.champion_after"] == "1"

    # The pipeline does not hand champion back to the rolled-back version by itself.
    m = _promote(registry, 2, accuracy=0.7)
    assert m["promoted"] == 0 and "was rolled back" in m["reason"]
    assert _aliases()[ALIAS_CHAMPION] == 1

    # v1 was the first champion: nothing recorded before it.
    with pytest.raises(rollback.RollbackError, match="llmops rollback --to VERSION"):
        rollback.rollback()
    with pytest.raises(rollback.RollbackError, match="no version 9"):
        rollback.rollback(to="9")
    # Naming the version lifts the guard.
    assert rollback.rollback(to="2").to_version == "2"
    assert audit.TAG_ROLLED_BACK not in _version_tags("2")


def test_rollback_without_a_champion_or_registry_says_so(registry, monkeypatch):
    from components.tracking.mlflow_env import configure

    configure()
    with pytest.raises(rollback.RollbackError, match="nothing to roll back"):
        rollback.rollback()
    before = _champion_v1_challenger_v2(registry)
    monkeypatch.setattr(rollback, "MlflowClient", FailingRegistry)
    with pytest.raises(champion.RegistryUnavailable, match="TEMPORARILY_UNAVAILABLE"):
        rollback.rollback()
    assert _aliases() == before


PAIRED = {
    "eval_accuracy": GateRule(better="higher", against="champion", test="mcnemar"),
    "perplexity": PPL,
}


def _champion_items_then(registry, challenger: list[bool]) -> dict:
    """v1 (right on the first half of the items) is champion; v2 answers `challenger`."""
    from components.tracking.mlflow_env import configure

    configure()
    _register_version(registry, 1)
    _promote(registry, 1, 0.5, gates=PAIRED)
    _register_version(registry, 2)
    accuracy = sum(challenger) / ITEMS
    return _promote(registry, 2, accuracy, correct=challenger, gates=PAIRED)


def test_one_lucky_item_does_not_promote_under_the_paired_test(registry):
    lucky = [i < ITEMS // 2 + 1 for i in range(ITEMS)]  # 0.55 vs 0.50: one item more
    m = _champion_items_then(registry, lucky)
    assert m["promoted"] == 0 and "not significant" in m["reason"]
    assert _aliases()[ALIAS_CHAMPION] == 1
    gate = next(g for g in json.loads(_version_tags("2")["promotion.gates"]) if g["paired"])
    assert gate["paired"]["test"] == "mcnemar_exact"
    assert (gate["paired"]["gains"], gate["paired"]["losses"], gate["paired"]["n"]) == (1, 0, 20)
    assert gate["paired"]["p_better"] == pytest.approx(0.5)
    assert gate["bound"] == 0.5  # the champion's 0.5 + min_delta 0: the margin


def test_the_same_model_retrained_keeps_the_champion(registry):
    same = [i < ITEMS // 2 for i in range(ITEMS)]
    m = _champion_items_then(registry, same)
    assert m["promoted"] == 0 and "+0 -0" in m["reason"]


def test_a_genuinely_better_challenger_is_promoted_with_its_p_value_in_the_audit(registry):
    better = [True] * ITEMS  # right on all ten items the champion got wrong
    m = _champion_items_then(registry, better)
    assert m["promoted"] == 1 and _aliases()[ALIAS_CHAMPION] == 2
    decision = mlflow.artifacts.load_dict(
        f"{MlflowClient().get_run(_version_tags('2')['promotion.run_id']).info.artifact_uri}"
        "/promotion/decision.json"
    )
    paired = next(g["paired"] for g in decision["gates"] if g["paired"])
    assert paired["p_better"] == pytest.approx(0.5**10) and paired["direction"] == "better"
    assert decision["confidence"] == 0.95


def test_a_champion_without_per_item_results_is_never_beaten_by_the_paired_gate(registry):
    from components.tracking.mlflow_env import configure

    configure()
    _register_version(registry, 1)
    MlflowClient().set_registered_model_alias(MODEL_POLICY, ALIAS_CHAMPION, "1")  # by hand
    MlflowClient().set_model_version_tag(MODEL_POLICY, "1", "eval.eval_accuracy", "0.1")
    _register_version(registry, 2)
    m = _promote(registry, 2, 1.0, gates=PAIRED)
    assert m["promoted"] == 0 and "has no promotion.items tag" in m["reason"]


JUDGE = GateRule(
    better="higher",
    against="absolute",
    threshold=0.5,
    if_missing="skip",
    bound="judge_win_rate_ci_high",
    independence="judge_independent",
)


def _paired(gains: int, losses: int, n: int = 40):
    from components.evaluation.significance import mcnemar

    ids = [str(i) for i in range(n)]
    mine = {i: k < gains for k, i in enumerate(ids)}
    theirs = {i: gains <= k < gains + losses for k, i in enumerate(ids)}
    return {"eval_accuracy": mcnemar(mine, theirs, 0.95)}


def _judged(low: float, high: float, independent: int) -> dict:
    return {
        "eval_accuracy": 0.6,
        "perplexity": 10,
        "judge_win_rate": (low + high) / 2,
        "judge_win_rate_ci_low": low,
        "judge_win_rate_ci_high": high,
        "judge_independent": independent,
    }


def _cfg(**kw) -> PromoteParams:
    return PromoteParams(gates={**PAIRED, "judge_win_rate": JUDGE}, **kw)


def test_an_absolute_gate_with_a_bound_compares_the_bound():
    d = promote.decide(_cfg(), _judged(0.2, 0.45, 1), None)
    judge = next(g for g in d.gates if g.gate == "judge_win_rate")
    assert judge.status == "fail" and "judge_win_rate_ci_high=0.45 < 0.5" in judge.reason
    d = promote.decide(_cfg(), _judged(0.3, 0.6, 1), None)
    assert next(g for g in d.gates if g.gate == "judge_win_rate").status == "pass"


def test_a_judge_sharing_training_signal_can_fail_the_gate_but_never_pass_it():
    champion = {"eval_accuracy": 0.5}
    dep = promote.decide(_cfg(), _judged(0.4, 0.9, 0), champion, _paired(12, 0))
    judge = next(g for g in dep.gates if g.gate == "judge_win_rate")
    assert judge.status == "skip" and "not independent" in judge.reason
    indep = promote.decide(_cfg(), _judged(0.4, 0.9, 1), champion, _paired(12, 0))
    assert next(g for g in indep.gates if g.gate == "judge_win_rate").status == "pass"
    worse = promote.decide(_cfg(), _judged(0.1, 0.3, 0), champion, _paired(0, 0))
    assert next(g for g in worse.gates if g.gate == "judge_win_rate").status == "fail"


def test_disagreeing_signals_follow_the_written_rule_not_the_gates():
    champion = {"eval_accuracy": 0.5}
    # Accuracy significantly better (12 gains, 0 losses), the judge significantly worse.
    judged, paired = _judged(0.1, 0.3, 1), _paired(12, 0)
    keep = promote.decide(_cfg(), judged, champion, paired)
    assert keep.signals.disagree and (keep.signals.accuracy, keep.signals.judge) == (
        "better",
        "worse",
    )
    assert not keep.promote and "signals disagree" in keep.reason
    by_accuracy = promote.decide(_cfg(on_disagreement="accuracy"), judged, champion, paired)
    assert by_accuracy.promote and "overruled" in by_accuracy.reason
    # Accuracy significantly worse, an independent judge significantly better.
    judged, paired = _judged(0.7, 0.9, 1), _paired(0, 12)
    assert not promote.decide(_cfg(on_disagreement="accuracy"), judged, champion, paired).promote
    assert promote.decide(_cfg(on_disagreement="judge"), judged, champion, paired).promote
    # ... but a judge that shares training signal with the challenger never decides.
    dependent = promote.decide(_cfg(on_disagreement="judge"), {**judged, "judge_independent": 0},
                               champion, paired)  # fmt: skip
    assert not dependent.promote and "not independent" in dependent.reason


def test_signals_that_agree_or_are_not_significant_are_no_disagreement():
    champion = {"eval_accuracy": 0.5}
    agree = promote.decide(_cfg(), _judged(0.6, 0.9, 1), champion, _paired(12, 0))
    assert not agree.signals.disagree and agree.promote
    unclear = promote.decide(_cfg(), _judged(0.1, 0.3, 1), champion, _paired(2, 1))
    assert unclear.signals.accuracy == "none" and not unclear.signals.disagree


def test_paired_and_bound_options_are_checked_where_they_apply():
    with pytest.raises(ValidationError, match="against: champion"):
        GateRule(better="higher", against="absolute", threshold=0.5, test="mcnemar")
    with pytest.raises(ValidationError, match="`bound` replaces"):
        GateRule(better="higher", against="champion", bound="x_ci_low")
