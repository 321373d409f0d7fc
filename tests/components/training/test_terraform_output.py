"""Reading `terraform output -json`: what a launch needs, clear errors for what it cannot use."""

from __future__ import annotations

import copy
import json

import pytest

from components.training import terraform_output as tf
from flows.params_overlay import preview_params
from tests.helpers import ROOT

SAMPLE = ROOT / "tests" / "fixtures" / "terraform" / "output-2x8.json"


@pytest.fixture
def doc() -> dict:
    return json.loads(SAMPLE.read_text())


@pytest.fixture(scope="module")
def cluster_profile():
    return preview_params(ROOT / "params.yaml", "cluster")


def test_sample_output_gives_the_cluster(doc):
    out = tf.parse(doc)
    assert out.hostnames == ("ip-10-42-0-12.ec2.internal", "ip-10-42-0-85.ec2.internal")
    assert (out.nodes, out.gpus_per_node, out.efa_interfaces) == (2, 8, 32)
    assert out.dvc_remote_url == "s3://llmops-dvc-123456789012/dvc"
    assert out.mlflow_tracking_uri == "http://10.42.0.37:5000"
    assert out.prefect_api_url == "http://10.42.0.37:4200/api"
    assert tf.efa_env(out) == tf.EFA_ENV


def test_no_efa_means_no_libfabric_settings(doc):
    doc["efa_interfaces_per_node"]["value"] = 0
    assert tf.efa_env(tf.parse(doc)) == {}


def test_missing_keys_are_named(doc):
    del doc["node_hostnames"], doc["prefect_api_url"]
    with pytest.raises(tf.TerraformOutputError, match="lacks node_hostnames, prefect_api_url"):
        tf.parse(doc)


def test_a_single_output_instead_of_the_map_is_explained(doc):
    doc["gpus_per_node"] = 8  # what `terraform output -json gpus_per_node` prints
    with pytest.raises(tf.TerraformOutputError, match="not of `terraform output -json NAME`"):
        tf.parse(doc)


def test_node_count_must_match_the_hosts(doc):
    doc["node_count"]["value"] = 3
    with pytest.raises(tf.TerraformOutputError, match="node_count is 3 but Terraform lists 2"):
        tf.parse(doc)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("gpus_per_node", 0, "gpus_per_node is 0"),
        ("gpus_per_node", "8", "gpus_per_node is '8'"),
        ("mlflow_tracking_uri", "10.42.0.37:5000", "expected an http"),
        ("node_hostnames", ["a", "a"], "node_hostnames repeats a host"),
    ],
)
def test_bad_values_are_named(doc, key, value, message):
    doc[key]["value"] = value
    with pytest.raises(tf.TerraformOutputError, match=message):
        tf.parse(doc)


def test_overrides_keep_the_profiles_global_batch(doc, cluster_profile):
    pre, cluster = cluster_profile.pretrain, cluster_profile.cluster
    global_batch = pre.micro_batch_size * pre.grad_accum_steps * cluster.world_size
    assert global_batch == 4 * 8 * 16

    same = tf.params_overrides(tf.parse(doc), cluster_profile)
    assert same == {
        "cluster.nodes": "2",
        "cluster.ranks_per_node": "8",
        "cluster.hosts": '["ip-10-42-0-12.ec2.internal", "ip-10-42-0-85.ec2.internal"]',
        "pretrain.grad_accum_steps": "8",
        "posttrain.ranks": "8",
    }

    four = copy.deepcopy(doc)
    hosts = [f"ip-10-42-0-{i}.ec2.internal" for i in range(4)]
    four["node_count"]["value"] = 4
    four["node_hostnames"]["value"] = hosts
    four["node_private_ips"]["value"] = [f"10.42.0.{i}" for i in range(4)]
    bigger = tf.params_overrides(tf.parse(four), cluster_profile)
    assert bigger["pretrain.grad_accum_steps"] == "4"  # 4 × 4 × 32 ranks = 512 still
    # The overrides are valid params: the schema accepts them as a whole.
    fitted = preview_params(ROOT / "params.yaml", "cluster", bigger)
    assert fitted.cluster.world_size == 32 and fitted.cluster.hosts == tuple(hosts)
    assert fitted.posttrain.ranks == 8


def test_gpus_that_do_not_divide_the_batch_are_refused(doc, cluster_profile):
    three = copy.deepcopy(doc)
    three["node_count"]["value"] = 3
    three["node_hostnames"]["value"] = ["a", "b", "c"]
    three["node_private_ips"]["value"] = ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
    with pytest.raises(tf.TerraformOutputError, match="24 ranks .* does not divide .* 512"):
        tf.params_overrides(tf.parse(three), cluster_profile)
