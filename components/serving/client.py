"""A smoke load against an OpenAI-compatible server: latency and throughput per request kind.

Requests go one after the other (latency, not concurrency, is what is measured), greedy
(temperature 0), through the official `openai` client, exactly as a user of the server would.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from openai import OpenAI, OpenAIError

log = logging.getLogger(__name__)

Kind = Literal["chat", "completion"]
REQUEST_TIMEOUT_S = 120.0

# Prompts cycled through by the load; short, in the domains of the bundled corpus.
PROMPTS: tuple[str, ...] = (
    "What is a Python list?",
    "Write one line of a sonnet about the sea.",
    "Explain what a software license is.",
    "How do I open a file in Python?",
    "Who is speaking in this scene?",
    "Summarise the GNU General Public License in one sentence.",
)


@dataclass(frozen=True)
class RequestResult:
    kind: Kind
    prompt: str
    ok: bool
    latency_s: float
    completion_tokens: int = 0
    text: str = ""
    error: str = ""


def make_client(base_url: str, api_key: str | None = None) -> OpenAI:
    # No retries: a retried request would hide a failure and skew latency. "EMPTY" is what the
    # client sends to a server without a key (it insists on some value).
    return OpenAI(
        base_url=base_url,
        api_key=api_key or "EMPTY",
        timeout=REQUEST_TIMEOUT_S,
        max_retries=0,
    )


def answer_check(base_url: str, model: str, api_key: str | None = None) -> str:
    """One short greedy completion; raises unless it comes back with at least one token
    (`min_tokens`: a model whose first token is EOS still proves it answers)."""
    resp = make_client(base_url, api_key).completions.create(
        model=model,
        prompt=PROMPTS[0],
        max_tokens=4,
        temperature=0,
        extra_body={"min_tokens": 1},
    )
    if not resp.choices or not resp.usage or resp.usage.completion_tokens < 1:
        raise RuntimeError(f"the completion came back without tokens: {resp}")
    return resp.choices[0].text


def _chat(client: OpenAI, model: str, prompt: str, max_tokens: int) -> tuple[str, int]:
    resp = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": prompt}],
        max_tokens=max_tokens,
        temperature=0,
    )
    return resp.choices[0].message.content or "", resp.usage.completion_tokens if resp.usage else 0


def _completion(client: OpenAI, model: str, prompt: str, max_tokens: int) -> tuple[str, int]:
    resp = client.completions.create(
        model=model, prompt=prompt, max_tokens=max_tokens, temperature=0
    )
    return resp.choices[0].text, resp.usage.completion_tokens if resp.usage else 0


_CALLS: dict[Kind, Callable[[OpenAI, str, str, int], tuple[str, int]]] = {
    "chat": _chat,
    "completion": _completion,
}


def timed_request(
    client: OpenAI, kind: Kind, model: str, prompt: str, max_tokens: int
) -> RequestResult:
    start = time.perf_counter()
    try:
        text, n_tokens = _CALLS[kind](client, model, prompt, max_tokens)
    except OpenAIError as err:  # recorded and counted: the summary's n_ok shows it
        log.warning("%s request failed: %s", kind, err)
        return RequestResult(kind, prompt, False, time.perf_counter() - start, error=str(err))
    return RequestResult(kind, prompt, True, time.perf_counter() - start, n_tokens, text)


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (q in [0, 100]); NaN for no values."""
    if not values:
        return float("nan")
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def summarize(results: Sequence[RequestResult]) -> dict[str, Any]:
    ok = [r for r in results if r.ok]
    latencies = [r.latency_s for r in ok]
    tokens = sum(r.completion_tokens for r in ok)
    busy = sum(latencies)
    return {
        "n": len(results),
        "n_ok": len(ok),
        "latency_p50_s": round(percentile(latencies, 50), 4),
        "latency_p95_s": round(percentile(latencies, 95), 4),
        "completion_tokens": tokens,
        "tokens_per_s": round(tokens / busy, 2) if busy > 0 else 0.0,
        "sample_prompt": ok[0].prompt if ok else "",
        "sample_reply": ok[0].text if ok else "",
        "first_error": next((r.error for r in results if not r.ok), ""),
    }


def run_load(
    base_url: str,
    model: str,
    n_requests: int,
    max_tokens: int,
    kinds: Sequence[Kind] = ("chat", "completion"),
    prompts: Sequence[str] = PROMPTS,
    api_key: str | None = None,
) -> dict[str, dict[str, Any]]:
    """`n_requests` of each kind; returns {kind: summary + the per-request records}."""
    client = make_client(base_url, api_key)
    out: dict[str, dict[str, Any]] = {}
    for kind in kinds:
        results = [
            timed_request(client, kind, model, prompts[i % len(prompts)], max_tokens)
            for i in range(n_requests)
        ]
        out[kind] = {**summarize(results), "requests": [asdict(r) for r in results]}
        log.info(
            "%s: %d/%d ok, p50 %.3f s, %.1f tokens/s",
            kind,
            out[kind]["n_ok"],
            n_requests,
            out[kind]["latency_p50_s"],
            out[kind]["tokens_per_s"],
        )
    return out
