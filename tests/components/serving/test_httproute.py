"""The cluster canary: the HTTPRoute rendered from deploy.canary, checked offline."""

from __future__ import annotations

import jsonschema
import pytest

from components.config import CanaryWeights
from components.serving import httproute
from tests.helpers import project_params

DEPLOY = project_params().deploy


def test_the_route_weights_the_two_services_and_passes_the_schema():
    route = httproute.render(DEPLOY, "3", "4", namespace="serving")
    rule = route["spec"]["rules"][0]
    assert [(b["name"], b["weight"], b["port"]) for b in rule["backendRefs"]] == [
        ("llmops-policy-v3", 90, DEPLOY.port),
        ("llmops-policy-v4", 10, DEPLOY.port),
    ]
    assert route["spec"]["parentRefs"] == [{"name": DEPLOY.canary.k8s_gateway}]
    decided = httproute.render(DEPLOY, "3", "4", CanaryWeights(champion=0, challenger=100))
    assert [b["weight"] for b in decided["spec"]["rules"][0]["backendRefs"]] == [0, 100]


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("spec", "rules", 0, "backendRefs", 0, "weight"), -1),
        (("spec", "rules", 0, "backendRefs", 1, "name"), "Policy_V4"),
        (("spec", "rules", 0, "backendRefs", 0, "port"), 70000),
        (("apiVersion",), "gateway.networking.k8s.io/v1alpha1"),
        (("spec", "rules", 0, "backendRef"), []),  # a misspelt field
    ],
)
def test_the_schema_rejects_what_the_api_server_would(path, value):
    route = httproute.render(DEPLOY, "3", "4")
    node = route
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(jsonschema.ValidationError):
        httproute.validate(route)
