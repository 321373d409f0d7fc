import json
import socket

import mlflow
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import TEMPORARILY_UNAVAILABLE

from components.config import PromoteParams
from components.constants import ALIAS_CHALLENGER, ALIAS_CHAMPION, MODEL_POLICY, REGISTRY_RECORD
from components.failures import is_transient
from components.registry import promote
from components.tracking.stage_run import stage_run
from tests.helpers import project_params, stage_view

CFG = PromoteParams(metric="eval_accuracy", min_delta=0.0, max_perplexity=100.0)


def test_no_champion_promotes():
    assert promote.decide(CFG, {"eval_accuracy": 0.1, "perplexity": 10}, None).promote


def test_perplexity_gate_blocks():
    d = promote.decide(CFG, {"eval_accuracy": 0.9, "perplexity": 500}, None)
    assert not d.promote and "max_perplexity" in d.reason


def test_worse_accuracy_keeps_champion_and_says_why():
    d = promote.decide(
        CFG, {"eval_accuracy": 0.4, "perplexity": 10}, {"eval_accuracy": 0.5, "perplexity": 10}
    )
    assert not d.promote
    assert "0.4000 fails the gate >= 0.5000" in d.reason


def test_lower_perplexity_wins_when_that_is_the_metric():
    cfg = PromoteParams(metric="perplexity", min_delta=1.0, max_perplexity=100.0)
    assert promote.decide(cfg, {"perplexity": 8}, {"perplexity": 10}).promote
    assert not promote.decide(cfg, {"perplexity": 9.5}, {"perplexity": 10}).promote


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


def _promote(tmp_path, n: int, accuracy: float) -> dict:
    params = project_params(promote={"max_perplexity": 100.0})
    evaluation = tmp_path / f"eval{n}.json"
    evaluation.write_text(
        json.dumps({"eval_accuracy": accuracy, "perplexity": 20.0, "base.eval_accuracy": 0.0})
    )
    paths = promote.Paths(
        policy=tmp_path / f"policy{n}", evaluation=evaluation, metrics=tmp_path / "m.json"
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
    assert m2["promoted"] == 0 and "fails the gate" in m2["reason"]
    assert client.get_model_version_by_alias(MODEL_POLICY, ALIAS_CHAMPION).version == v1
    assert client.get_model_version_by_alias(MODEL_POLICY, ALIAS_CHALLENGER).version == v2
    assert m2["previous_champion.eval_accuracy"] == 0.5

    # Re-running promote on the champion itself keeps it (no self-comparison).
    m3 = _promote(registry, 1, accuracy=0.5)
    assert m3["promoted"] == 1 and "already holds champion" in m3["reason"]


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
    with pytest.raises(promote.RegistryUnavailable, match="TEMPORARILY_UNAVAILABLE") as caught:
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
    with pytest.raises(promote.RegistryUnavailable, match="cannot read the champion alias"):
        _promote(registry, 2, accuracy=0.9)
    assert _aliases() == before


def test_no_champion_only_when_the_model_or_alias_does_not_exist(registry):
    from components.tracking.mlflow_env import configure

    configure()
    client = MlflowClient()
    assert promote.current_champion(client, MODEL_POLICY) is None  # no such model
    _register_version(registry, 1)
    assert promote.current_champion(client, MODEL_POLICY) is None  # model without the alias
    client.set_registered_model_alias(MODEL_POLICY, ALIAS_CHAMPION, "1")
    assert str(promote.current_champion(client, MODEL_POLICY).version) == "1"
