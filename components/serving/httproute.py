"""The cluster form of the canary: a Gateway API `HTTPRoute` whose weighted `backendRefs` split
traffic between the champion's and the challenger's Services, rendered from the same
`deploy.canary` params as the LiteLLM gateway, and checked offline against the HTTPRoute schema
(infra/k8s/httproute.schema.json) before it is written.

Each version is served by its own Deployment + Service named `<served name>-v<version>` (the
serve image, infra/docker/serve.Dockerfile), listening on `deploy.port`; the route attaches to
the cluster's Gateway `deploy.canary.k8s_gateway`. A Gateway API implementation (Envoy Gateway,
Istio, GKE, ...) splits requests in proportion to the weights; the decision moves them to
100/0 or 0/100 by re-rendering with the decided weights.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema

from components.config import CanaryWeights, DeployParams
from components.constants import MODEL_POLICY

SCHEMA = Path(__file__).resolve().parents[2] / "infra" / "k8s" / "httproute.schema.json"


def service_name(version: str, served_name: str = MODEL_POLICY) -> str:
    return f"{served_name}-v{version}"


def render(
    cfg: DeployParams,
    champion: str,
    challenger: str,
    weights: CanaryWeights | None = None,
    namespace: str | None = None,
) -> dict[str, Any]:
    """The HTTPRoute (a dict, as `kubectl apply` reads it from YAML)."""
    w = weights or cfg.canary.weights
    backends = [
        {"name": service_name(champion), "port": cfg.port, "weight": w.champion},
        {"name": service_name(challenger), "port": cfg.port, "weight": w.challenger},
    ]
    metadata: dict[str, Any] = {
        "name": f"{MODEL_POLICY}-canary",
        "labels": {"app.kubernetes.io/part-of": "llmops", "llmops/champion": champion,
                   "llmops/challenger": challenger},
    }  # fmt: skip
    if namespace:
        metadata["namespace"] = namespace
    route = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": metadata,
        "spec": {
            "parentRefs": [{"name": cfg.canary.k8s_gateway}],
            "rules": [
                {"matches": [{"path": {"type": "PathPrefix", "value": "/v1"}}],
                 "backendRefs": backends},
            ],
        },
    }  # fmt: skip
    validate(route)
    return route


def validate(route: dict[str, Any]) -> None:
    """Raises jsonschema.ValidationError naming the offending field."""
    jsonschema.validate(route, json.loads(SCHEMA.read_text()))
