"""Progressive delivery: the registry's `challenger` takes a share of live traffic beside the
`champion`, and its live numbers decide. Run by the deploy stage when the promote stage's
verdict is `canary` (`deploy.canary.enabled`), and by `llmops canary` / `llmops serve --canary`.

setup (both versions from the registry, a vLLM server each) -> gateway (LiteLLM, weights from
`deploy.canary.weights`, the API key enforced) -> window (the bundled prompt set replayed to the
gateway on 127.0.0.1 until `window_requests` or `window_minutes`; the version that answered each
request is read from the gateway's `x-litellm-model-id` header) -> evaluate (lm-eval through the
gateway on each version's own model group) -> decide (the promotion gates' `check_gate` on
`deploy.canary.gates()`: the challenger no worse than the champion beyond each margin) -> apply
(promote: `champion` moves, weights 100/0 to the challenger; roll back: the challenger is tagged
rolled back, weights 0/100; failed: nothing moves, the champion keeps 100%) -> audit record.

Attribution: a request the challenger fails is answered by the champion through the fallback
(`x-litellm-attempted-fallbacks` > 0); it counts as a request and an error of the challenger,
which is the only deployment with a fallback behind it. Clients see no error.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal

import mlflow
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from openai import OpenAI, OpenAIError

from components.config import CanaryParams, CanaryWeights, DeployParams
from components.constants import ALIAS_CHALLENGER, ALIAS_CHAMPION, MODEL_POLICY, RUN_TAG_STAGE
from components.registry import audit
from components.registry.gates import GateResult, check_gate
from components.serving import client as load_client
from components.serving import live_eval, vllm_server
from components.serving.access import api_key, champion_version
from components.serving.gateway import (
    FALLBACKS_HEADER,
    MODEL_ID_HEADER,
    ROLES,
    Gateway,
    Role,
    Upstream,
    render_config,
    running_gateway,
)
from components.serving.vllm_server import port_in_use
from components.tracking import mlflow_env
from components.tracking.model_download import download_model

log = logging.getLogger(__name__)

Verdict = Literal["promoted", "rolled_back", "failed"]
UNATTRIBUTED = "unattributed"  # failed at the gateway, no version named
RUN_NAME = "canary"
REQUESTS_ARTIFACT = "promotion/canary_requests.jsonl"  # who answered each request of the window


@dataclass(frozen=True)
class Hit:
    """One replayed request as the client saw it, and which version answered it."""

    result: load_client.RequestResult
    answered_by: str  # x-litellm-model-id ("" when the gateway itself failed)
    fell_back: bool


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    reason: str
    gates: tuple[GateResult, ...] = ()

    @property
    def weights_after(self) -> CanaryWeights:
        """Promote: all traffic to the challenger; otherwise all of it stays on the champion."""
        if self.verdict == "promoted":
            return CanaryWeights(champion=0, challenger=100)
        return CanaryWeights(champion=100, challenger=0)


def load_prompts(path: Path) -> list[str]:
    prompts = [json.loads(line)["prompt"] for line in path.read_text().splitlines() if line.strip()]
    if not prompts:
        raise ValueError(f"the canary prompt set {path} is empty")
    return prompts


def send(client: OpenAI, model: str, prompt: str, max_tokens: int) -> Hit:
    """One chat request through the gateway, timed, with the headers that name the version."""
    start = time.perf_counter()
    try:
        raw = client.chat.completions.with_raw_response.create(
            model=model,
            messages=[{"role": "user", "content": prompt}],
            max_tokens=max_tokens,
            temperature=0,
        )
        resp = raw.parse()
    except OpenAIError as err:  # counted: the table's errors show it
        result = load_client.RequestResult("chat", prompt, False, time.perf_counter() - start)
        headers = getattr(getattr(err, "response", None), "headers", {}) or {}
        return Hit(
            dataclasses.replace(result, error=str(err)),
            headers.get(MODEL_ID_HEADER, ""),
            False,
        )
    tokens = resp.usage.completion_tokens if resp.usage else 0
    text = resp.choices[0].message.content or "" if resp.choices else ""
    result = load_client.RequestResult(
        "chat", prompt, True, time.perf_counter() - start, tokens, text
    )
    fell_back = int(raw.headers.get(FALLBACKS_HEADER) or 0) > 0
    return Hit(result, raw.headers.get(MODEL_ID_HEADER, ""), fell_back)


def replay(
    gateway: Gateway,
    prompts: Sequence[str],
    cfg: CanaryParams,
    max_tokens: int,
    challenger_alive: Callable[[], bool],
) -> tuple[list[Hit], str]:
    """The window: prompts in turn until `window_requests` or `window_minutes`. Returns the
    hits and why the window ended early ("" when it ran to its end)."""
    client = load_client.make_client(gateway.base_url, gateway.api_key)
    deadline = time.monotonic() + cfg.window_minutes * 60
    hits: list[Hit] = []
    for i in range(cfg.window_requests):
        if time.monotonic() > deadline:
            break
        hits.append(send(client, gateway.served_name, prompts[i % len(prompts)], max_tokens))
        if not challenger_alive():
            return hits, (
                f"the challenger's server stopped during the window (after {len(hits)} of "
                f"{cfg.window_requests} requests); the gateway fell back to the champion"
            )
    return hits, ""


def routed_to(hit: Hit, upstreams: Mapping[Role, Upstream]) -> str:
    """The version the gateway chose first: the challenger's when it fell back."""
    if hit.fell_back:
        return upstreams["challenger"].version
    versions = {up.version for up in upstreams.values()}
    return hit.answered_by if hit.answered_by in versions else UNATTRIBUTED


def _as_failure(result: load_client.RequestResult) -> load_client.RequestResult:
    return dataclasses.replace(result, ok=False, error=result.error or "fell back to the champion")


def table(
    hits: Sequence[Hit],
    upstreams: Mapping[Role, Upstream],
    accuracy: Mapping[Role, float | None] | None = None,
) -> dict[str, dict[str, Any]]:
    """Per version (and `unattributed` when the gateway failed without naming one):
    requests, errors, error rate, p50/p95 latency, tokens/s, accuracy."""
    rows: dict[str, dict[str, Any]] = {}
    labels = {up.version: role for role, up in upstreams.items()}
    for version in [*labels, UNATTRIBUTED]:
        mine = [
            _as_failure(h.result) if h.fell_back else h.result
            for h in hits
            if routed_to(h, upstreams) == version
        ]
        if version == UNATTRIBUTED and not mine:
            continue
        s = load_client.summarize(mine)
        n, errors = s["n"], s["n"] - s["n_ok"]
        rows[labels.get(version, UNATTRIBUTED)] = {
            "version": version,
            "requests": n,
            "errors": errors,
            "error_rate": round(errors / n, 4) if n else float("nan"),
            "latency_p50_s": s["latency_p50_s"],
            "latency_p95_s": s["latency_p95_s"],
            "tokens_per_s": s["tokens_per_s"],
            "accuracy": (accuracy or {}).get(labels.get(version, ""), None),
            "first_error": s["first_error"],
        }
    return rows


def request_log(hits: Sequence[Hit], upstreams: Mapping[Role, Upstream]) -> str:
    """One JSON line per replayed request: which version it was routed to, which answered it
    (the champion, after a fallback), whether the client got an answer, and how fast."""
    lines = (
        json.dumps(
            {
                "i": i,
                "routed_to": routed_to(h, upstreams),
                "answered_by": h.answered_by,
                "fell_back": h.fell_back,
                "ok": h.result.ok,
                "latency_s": round(h.result.latency_s, 4),
                "completion_tokens": h.result.completion_tokens,
                "error": h.result.error,
            }
        )
        for i, h in enumerate(hits)
    )
    return "".join(line + "\n" for line in lines)


def gate_values(row: Mapping[str, Any]) -> dict[str, float]:
    """The numbers the gates read; a missing or NaN one is left out (its gate cannot pass)."""
    keys = ("error_rate", "latency_p95_s", "accuracy")
    return {
        k: float(row[k])
        for k in keys
        if isinstance(row.get(k), int | float) and not math.isnan(row[k])
    }


def decide(cfg: CanaryParams, rows: Mapping[str, Mapping[str, Any]], failure: str = "") -> Decision:
    """Pure: failed when the window could not judge the challenger; else promoted iff no gate
    fails (each `against: champion` gate tolerates its margin), else rolled back."""
    if failure:
        return Decision("failed", failure)
    n = rows["challenger"]["requests"]
    if n < cfg.min_challenger_requests:
        return Decision(
            "failed",
            f"the challenger got {n} requests in the window, fewer than "
            f"deploy.canary.min_challenger_requests={cfg.min_challenger_requests}: raise "
            "window_requests or the challenger's weight",
        )
    mine, theirs = gate_values(rows["challenger"]), gate_values(rows["champion"])
    results = tuple(
        check_gate(name, rule.metric or name, rule, 0.0, mine, theirs)
        for name, rule in cfg.gates().items()
    )
    summary = "; ".join(f"{r.gate} {r.status}: {r.reason}" for r in results)
    failed = [r.gate for r in results if r.status == "fail"]
    if failed:
        return Decision("rolled_back", f"gates failed ({', '.join(failed)}): {summary}", results)
    return Decision("promoted", f"no gate failed: {summary}", results)


def accuracies(
    gateway: Gateway, cfg: DeployParams, eval_set: Path | None
) -> dict[Role, float | None]:
    """lm-eval through the gateway on each version's own model group."""
    if eval_set is None or not cfg.eval_tasks:
        return {role: None for role in ROLES}
    return {
        role: live_eval.pooled_accuracy(
            dataclasses.replace(gateway, served_name=gateway.group(role)), cfg, eval_set
        )
        for role in ROLES
    }


def record(
    decision: Decision,
    rows: Mapping[str, Mapping[str, Any]],
    upstreams: Mapping[Role, Upstream],
    cfg: CanaryParams,
    run_id: str,
) -> dict[str, Any]:
    """The audit record of a canary (the shape of the promote stage's)."""
    champ, chall = upstreams["champion"].version, upstreams["challenger"].version
    return {
        "verdict": decision.verdict,
        "reason": decision.reason,
        "challenger_version": chall,
        "champion_before": champ,
        "champion_after": chall if decision.verdict == "promoted" else champ,
        "canary": {k: dict(v) for k, v in rows.items()},
        "gates": [dataclasses.asdict(g) for g in decision.gates],
        "weights_before": cfg.weights.model_dump(),
        "weights_after": decision.weights_after.model_dump(),
        **audit.stamp(run_id),
    }


def apply(client: Any, entry: Mapping[str, Any], name: str = MODEL_POLICY) -> None:
    """Move the alias as the record says, tag the challenger's version with the record."""
    chall, before = entry["challenger_version"], entry["champion_before"]
    if entry["verdict"] == "promoted":
        client.set_registered_model_alias(name, ALIAS_CHAMPION, chall)
        client.set_model_version_tag(name, chall, audit.TAG_PREVIOUS_CHAMPION, before)
    elif entry["verdict"] == "rolled_back":
        client.set_model_version_tag(name, chall, audit.TAG_ROLLED_BACK, entry["at"])
    audit.tag_version(client, name, chall, {k: v for k, v in entry.items() if k != "canary"})


def format_table(rows: Mapping[str, Mapping[str, Any]]) -> str:
    """The canary table as text (the stage's notes and `llmops canary`'s output)."""
    head = f"{'role':<12}{'version':>8}{'requests':>10}{'errors':>8}{'p50 s':>9}{'p95 s':>9}"
    head += f"{'tok/s':>9}{'accuracy':>10}"
    lines = [head]
    for role, r in rows.items():
        acc = "-" if r.get("accuracy") is None else f"{r['accuracy']:.3f}"
        lines.append(
            f"{role:<12}{r['version']:>8}{r['requests']:>10}{r['errors']:>8}"
            f"{r['latency_p50_s']:>9.3f}{r['latency_p95_s']:>9.3f}{r['tokens_per_s']:>9.1f}{acc:>10}"
        )
    return "\n".join(lines)


def reachable(base_url: str) -> bool:
    """The upstream still accepts connections (a killed server's port is closed)."""
    port = int(base_url.rsplit(":", 1)[1].split("/")[0])
    return port_in_use(port)


def _models(client: MlflowClient, workdir: Path) -> dict[Role, tuple[ModelVersion, Path]]:
    """Both versions the registry names, downloaded."""
    champ = champion_version(client)
    try:
        chall = client.get_model_version_by_alias(MODEL_POLICY, ALIAS_CHALLENGER)
    except MlflowException as err:
        raise LookupError(
            f"no version of {MODEL_POLICY} holds the {ALIAS_CHALLENGER} alias (the promote "
            f"stage sets it): nothing to canary ({err.message})"
        ) from err
    return {
        role: (v, download_model(f"models:/{MODEL_POLICY}/{v.version}", workdir / role))
        for role, v in (("champion", champ), ("challenger", chall))
    }


def serve_canary(
    cfg: DeployParams,
    prompts: Path,
    eval_set: Path | None,
    workdir: Path,
    *,
    hold: bool = False,
    in_active_run: bool = False,
) -> dict[str, Any]:
    """Champion and challenger served by vLLM behind the gateway, the window replayed, the
    decision applied with its audit record: in an MLflow run `canary` of its own, or with
    `in_active_run` in the run already active (the deploy stage's). With `hold` (`llmops serve
    --canary`) the gateway then serves on with the decided weights until Ctrl-C."""
    mlflow_env.configure()
    client = MlflowClient()
    key = api_key(cfg, one_time_ok=not hold)
    models = _models(client, workdir)
    ports = {"champion": cfg.port, "challenger": cfg.canary.challenger_port}
    with ExitStack() as stack:
        servers = {
            role: stack.enter_context(
                vllm_server.running_server(
                    path, cfg.model_copy(update={"port": ports[role]}), MODEL_POLICY,
                    workdir / f"vllm-{role}.log", api_key=key,
                )
            )
            for role, (_, path) in models.items()
        }  # fmt: skip
        ups = {
            role: Upstream(role, str(models[role][0].version), s.base_url)
            for role, s in servers.items()
        }
        gw_cm = running_gateway(
            render_config(ups, cfg.canary.weights), cfg.canary.gateway_port, key, key,
            workdir / "gateway", timeout_s=cfg.canary.startup_timeout_s,
        )  # fmt: skip
        with gw_cm as gw:
            alive = partial(reachable, ups["challenger"].base_url)
            hits, failure = replay(gw, load_prompts(prompts), cfg.canary, cfg.max_tokens, alive)
            acc = accuracies(gw, cfg, eval_set) if not failure else None
        rows = table(hits, ups, acc)
        decision = decide(cfg.canary, rows, failure)
        run_cm = (
            contextlib.nullcontext(mlflow.active_run())
            if in_active_run
            else mlflow.start_run(run_name=RUN_NAME, tags={RUN_TAG_STAGE: RUN_NAME})
        )
        with run_cm as run:
            entry = record(decision, rows, ups, cfg.canary, run.info.run_id)
            mlflow.log_dict(entry, "promotion/canary.json")
            mlflow.log_text(request_log(hits, ups), REQUESTS_ARTIFACT)
            mlflow.set_tags(audit.as_tags({k: v for k, v in entry.items() if k != "canary"}))
            apply(client, entry)
        log.info("canary %s: %s\n%s", decision.verdict, decision.reason, format_table(rows))
        if hold:
            final = render_config(ups, decision.weights_after)
            with running_gateway(final, cfg.canary.gateway_port, key, key, workdir / "final") as gw:
                print(f"{format_table(rows)}\ncanary {decision.verdict}: {decision.reason}")
                weights = decision.weights_after.model_dump()
                print(f"OpenAI API at {gw.base_url} ({gw.served_name}, weights {weights})")
                print("Ctrl-C stops", flush=True)
                with contextlib.suppress(KeyboardInterrupt):
                    signal.pause()
    return entry
