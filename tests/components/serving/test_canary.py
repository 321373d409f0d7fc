"""The canary: the real LiteLLM proxy (.venv-gateway) in front of two fake OpenAI-compatible
upstreams (separate processes, so one can be killed). Weights observed over 400 requests, the
key enforced at the gateway, a challenger killed mid-window, a garbage challenger rolled back
with an audit record; the decision itself on hand-made tables."""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import mlflow
import pytest
import yaml
from mlflow import MlflowClient

from components.config import CanaryParams, CanaryWeights
from components.constants import ALIAS_CHAMPION, MODEL_POLICY
from components.registry import audit
from components.serving import canary, deploy, gateway
from components.serving.client import RequestResult
from tests.components.serving import fake_openai
from tests.helpers import project_params

KEY = "sk-canary-test"
CHAMP, CHALL = "3", "4"

try:
    gateway.gateway_python()
    HAVE_GATEWAY = True
except gateway.GatewayError:
    HAVE_GATEWAY = False
needs_gateway = pytest.mark.skipif(
    not HAVE_GATEWAY, reason="no .venv-gateway (make setup) or $LLMOPS_GATEWAY_PYTHON"
)


def _upstreams(champ_url: str, chall_url: str) -> dict[str, gateway.Upstream]:
    return {
        "champion": gateway.Upstream("champion", CHAMP, champ_url),
        "challenger": gateway.Upstream("challenger", CHALL, chall_url),
    }


@pytest.fixture
def started(tmp_path):
    """start(weights, challenger_garbage) -> (gateway, upstreams, challenger process)."""
    stack: list = []

    def start(weights: CanaryWeights, garbage: bool = False):
        champ, champ_url = fake_openai.spawn("champion")
        chall, chall_url = fake_openai.spawn("challenger", garbage=garbage)
        stack.extend([champ, chall])
        ups = _upstreams(champ_url, chall_url)
        cm = gateway.running_gateway(
            gateway.render_config(ups, weights),
            fake_openai.free_port(),
            KEY,
            "upstream-key",
            tmp_path / f"gw-{weights.champion}",
            timeout_s=300,  # its first start compiles litellm's modules; a loaded CI is slow
        )
        stack.append(cm)
        return cm.__enter__(), ups, chall

    yield start
    for item in reversed(stack):
        if isinstance(item, subprocess.Popen):  # its own __exit__ would wait, not kill
            item.kill()
            item.wait()
        else:
            item.__exit__(None, None, None)


def _cfg(**kw) -> CanaryParams:
    return CanaryParams(enabled=True, **kw)


# --- the rendered config ------------------------------------------------------------------------


def test_config_weights_ids_fallback_and_no_secret_in_the_file():
    ups = _upstreams("http://127.0.0.1:1/v1", "http://127.0.0.1:2/v1")
    cfg = gateway.render_config(ups, CanaryWeights(champion=90, challenger=10))
    served = [d for d in cfg["model_list"] if d["model_name"] == MODEL_POLICY]
    assert [(d["model_info"]["id"], d["litellm_params"]["weight"]) for d in served] == [
        (CHAMP, 90),
        (CHALL, 10),
    ]
    assert cfg["router_settings"]["fallbacks"] == [{MODEL_POLICY: [f"{MODEL_POLICY}-champion"]}]
    assert cfg["general_settings"]["master_key"] == f"os.environ/{gateway.ENV_MASTER_KEY}"
    assert "sk-" not in yaml.safe_dump(cfg)
    same = {**ups, "challenger": gateway.Upstream("challenger", CHAMP, "http://127.0.0.1:2/v1")}
    with pytest.raises(ValueError, match="same version"):
        gateway.render_config(same, CanaryWeights())


# --- the decision on hand-made windows -----------------------------------------------------------


def _hit(version: str, ok: bool = True, latency: float = 0.1, fell_back: bool = False):
    result = RequestResult("chat", "p", ok, latency, 2, "x", "" if ok else "boom")
    return canary.Hit(result, version, fell_back)


UPS = _upstreams("u1", "u2")


def test_fallbacks_count_as_challenger_errors_and_roll_it_back():
    hits = [_hit(CHAMP)] * 80 + [_hit(CHALL)] * 14 + [_hit(CHAMP, fell_back=True)] * 6
    rows = canary.table(hits, UPS)
    assert rows["challenger"]["requests"] == 20 and rows["challenger"]["errors"] == 6
    assert rows["champion"]["requests"] == 80 and rows["champion"]["errors"] == 0
    decision = canary.decide(_cfg(), rows)
    assert decision.verdict == "rolled_back"
    assert "error_rate" in decision.reason
    assert decision.weights_after == CanaryWeights(champion=100, challenger=0)


def test_a_challenger_within_every_margin_is_promoted_and_a_slow_one_is_not():
    hits = [_hit(CHAMP, latency=0.2)] * 80 + [_hit(CHALL, latency=0.3)] * 20
    decision = canary.decide(_cfg(), canary.table(hits, UPS, {"champion": 0.5, "challenger": 0.48}))
    assert decision.verdict == "promoted", decision.reason
    assert "latency_p95_s=0.3 < champion 0.2 + 0.5" in decision.reason  # the tolerance, signed
    assert decision.weights_after == CanaryWeights(champion=0, challenger=100)
    slow = [_hit(CHAMP, latency=0.2)] * 80 + [_hit(CHALL, latency=0.9)] * 20
    assert canary.decide(_cfg(), canary.table(slow, UPS)).verdict == "rolled_back"
    worse = canary.table(hits, UPS, {"champion": 0.5, "challenger": 0.40})
    assert "accuracy" in canary.decide(_cfg(), worse).reason.split(":")[0]


def test_the_request_log_names_who_each_request_was_routed_to_and_who_answered():
    hits = [_hit(CHAMP), _hit(CHALL), _hit(CHAMP, fell_back=True), _hit("", ok=False)]
    rows = [json.loads(line) for line in canary.request_log(hits, UPS).splitlines()]
    assert [(r["routed_to"], r["answered_by"], r["ok"]) for r in rows] == [
        (CHAMP, CHAMP, True),
        (CHALL, CHALL, True),
        (CHALL, CHAMP, True),  # the challenger failed; the client got the champion's answer
        (canary.UNATTRIBUTED, "", False),
    ]
    assert [r["i"] for r in rows] == [0, 1, 2, 3] and rows[3]["error"] == "boom"


def test_too_few_challenger_requests_or_a_failure_decide_nothing():
    hits = [_hit(CHAMP)] * 95 + [_hit(CHALL)] * 5
    assert canary.decide(_cfg(), canary.table(hits, UPS)).verdict == "failed"
    decision = canary.decide(_cfg(), canary.table(hits, UPS), "server stopped")
    assert (decision.verdict, decision.reason) == ("failed", "server stopped")


class _Logs:
    """The stage's tracker as far as the canary uses it: the servers' logs."""

    def __init__(self) -> None:
        self.logged: list[str] = []

    def log_artifact(self, path, artifact_path=None) -> None:
        self.logged.append(f"{artifact_path}/{Path(path).name}")


def _deploy_paths(tmp_path) -> deploy.Paths:
    return deploy.Paths(*(tmp_path / n for n in ("p.json", "eval.jsonl", "c.jsonl", "o", "m")))


def test_in_the_deploy_stage_a_canary_that_cannot_decide_fails_the_stage(tmp_path, monkeypatch):
    hits = [_hit(CHAMP)] * 95 + [_hit(CHALL)] * 5
    rows = canary.table(hits, UPS)
    entry = canary.record(canary.decide(_cfg(), rows), rows, UPS, _cfg(), "run-1")

    def window(cfg, prompts, eval_set, workdir, *, in_active_run):
        assert in_active_run  # the record belongs to the deploy stage's run
        (workdir / "gateway").mkdir()
        (workdir / "gateway" / "gateway.log").write_text("proxy log")
        return entry

    monkeypatch.setattr(canary, "serve_canary", window)
    logs = _Logs()
    cfg = project_params().deploy
    with pytest.raises(deploy.CanaryFailedError, match=f"version {CHAMP} stays champion"):
        deploy.run_canary(cfg, _deploy_paths(tmp_path), logs)
    assert logs.logged == ["serving/canary/gateway.log"]  # logged even when it fails


def test_the_canary_s_live_numbers_reach_the_deploy_metrics():
    hits = [_hit(CHAMP, latency=0.2)] * 80 + [_hit(CHALL, latency=0.3)] * 20
    rows = canary.table(hits, UPS, {"champion": 0.5, "challenger": 0.48})
    entry = canary.record(canary.decide(_cfg(), rows), rows, UPS, _cfg(), "run-1")
    m = deploy.canary_metrics(entry)
    assert m["canary.verdict"] == "promoted" and m["canary.challenger.requests"] == 20
    assert m["canary.champion.accuracy"] == 0.5 and m["canary.challenger.latency_p95_s"] == 0.3


# --- the real gateway -----------------------------------------------------------------------------


def _shares(gw: gateway.Gateway, n: int) -> Counter:
    seen: Counter = Counter()
    with httpx.Client(headers={"Authorization": f"Bearer {KEY}"}, timeout=30) as c:
        for _ in range(n):
            r = c.post(
                f"{gw.base_url}/chat/completions",
                json={"model": gw.served_name, "messages": [{"role": "user", "content": "hi"}]},
            )
            assert r.status_code == 200, r.text
            seen[r.headers[gateway.MODEL_ID_HEADER]] += 1
    return seen


@needs_gateway
@pytest.mark.parametrize("champion", [90, 50])
def test_observed_shares_follow_the_weights_and_the_key_is_required(started, champion):
    gw, _, _ = started(CanaryWeights(champion=champion, challenger=100 - champion))
    # The gateway draws each route at random (unseeded): at 50/50 the share's standard deviation
    # is 2.5 points over 400 requests, so ±5 would fail about one run in twenty; over 1,200 it
    # is 1.4 points (±5 = 3.5 sigma).
    n = 1200
    seen = _shares(gw, n)
    assert set(seen) == {CHAMP, CHALL}
    assert abs(100 * seen[CHAMP] / n - champion) <= 5, seen
    body = {"model": gw.served_name, "messages": [{"role": "user", "content": "hi"}]}
    url = f"{gw.base_url}/chat/completions"
    assert httpx.post(url, json=body, timeout=30).status_code == 401
    wrong = httpx.post(url, json=body, headers={"Authorization": "Bearer nope"}, timeout=30)
    assert wrong.status_code in (400, 401) and "choices" not in wrong.text


@needs_gateway
def test_challenger_killed_mid_window_clients_see_no_error_and_the_canary_fails(started):
    gw, ups, chall = started(CanaryWeights(champion=50, challenger=50))
    cfg = _cfg(window_requests=150, min_challenger_requests=5)
    checks = iter(range(10**6))

    def alive() -> bool:
        if next(checks) == 39:  # a crash right after the 40th request's check
            chall.kill()
            chall.wait()
            return True
        return chall.poll() is None

    hits, failure = canary.replay(gw, ["hi", "hello"], cfg, 8, alive)
    assert all(h.result.ok for h in hits), [h.result.error for h in hits if not h.result.ok]
    assert 40 < len(hits) < 150 and "stopped during the window" in failure
    decision = canary.decide(cfg, canary.table(hits, ups), failure)
    assert decision.verdict == "failed"
    assert decision.weights_after == CanaryWeights(champion=100, challenger=0)


@pytest.fixture
def registry(tmp_path, monkeypatch) -> Iterator[MlflowClient]:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    client = MlflowClient()
    client.create_registered_model(MODEL_POLICY)
    for _ in range(4):
        client.create_model_version(MODEL_POLICY, source="file:///nowhere")
    client.set_registered_model_alias(MODEL_POLICY, ALIAS_CHAMPION, CHAMP)
    yield client


@needs_gateway
def test_a_garbage_challenger_is_rolled_back_with_an_audit_record(started, registry):
    gw, ups, chall = started(CanaryWeights(champion=50, challenger=50), garbage=True)
    cfg = _cfg(window_requests=60, min_challenger_requests=5)
    hits, failure = canary.replay(gw, ["hi"], cfg, 8, lambda: chall.poll() is None)
    assert failure == "" and all(h.result.ok for h in hits)  # the champion answered instead
    rows = canary.table(hits, ups)
    assert rows["challenger"]["requests"] >= 5
    assert rows["challenger"]["error_rate"] == 1.0 and rows["champion"]["errors"] == 0
    decision = canary.decide(cfg, rows, failure)
    assert decision.verdict == "rolled_back"
    with mlflow.start_run() as run:
        entry = canary.record(decision, rows, ups, cfg, run.info.run_id)
        canary.apply(registry, entry)
    assert str(registry.get_model_version_by_alias(MODEL_POLICY, ALIAS_CHAMPION).version) == CHAMP
    tags = registry.get_model_version(MODEL_POLICY, CHALL).tags
    assert tags[audit.TAG_PREFIX + "verdict"] == "rolled_back"
    assert audit.TAG_ROLLED_BACK in tags and tags[audit.TAG_PREFIX + "run_id"] == run.info.run_id
    assert '"challenger":100' not in tags[audit.TAG_PREFIX + "weights_after"]


def test_the_deploy_stage_canaries_a_challenger_once_and_retries_only_a_failed_canary(registry):
    promotion = {"verdict": "canary", "challenger_version": int(CHALL)}
    audit.tag_version(registry, MODEL_POLICY, CHALL, {"verdict": "canary"})  # as promote leaves it
    assert deploy.canary_pending(registry, promotion)
    for verdict, pending in (("failed", True), ("promoted", False), ("rolled_back", False)):
        audit.tag_version(registry, MODEL_POLICY, CHALL, {"verdict": verdict})
        assert deploy.canary_pending(registry, promotion) is pending, verdict
    assert not deploy.canary_pending(registry, {**promotion, "verdict": "promoted"})


def test_weights_must_add_up_and_the_three_ports_differ():
    with pytest.raises(ValueError, match="add up to 95"):
        CanaryWeights(champion=90, challenger=5)
    with pytest.raises(ValueError, match="must differ"):
        project_params(deploy={"port": 8770})  # the default gateway_port
