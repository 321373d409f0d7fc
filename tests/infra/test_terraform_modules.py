"""infra/terraform/aws, read with python-hcl2: it parses, and the security promises hold.

No terraform binary here, so these read the configuration as written; `terraform test`
(tests/cluster.tftest.hcl) plans it against a mocked provider where terraform is installed.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hcl2
import pytest
from hcl2.utils import SerializationOptions

from components.training.terraform_output import REQUIRED_OUTPUTS
from tests.helpers import ROOT

TF_ROOT = ROOT / "infra" / "terraform" / "aws"
OPTIONS = SerializationOptions(strip_string_quotes=True, explicit_blocks=False)
OPEN = {"0.0.0.0/0", "::/0"}


@functools.cache
def parsed(path: Path) -> dict[str, Any]:
    with path.open() as f:
        return hcl2.load(f, serialization_options=OPTIONS)


def tf_files(root: Path = TF_ROOT) -> list[Path]:
    return sorted(root.rglob("*.tf"))


def blocks(
    kind: str, type_: str | None = None, root: Path = TF_ROOT
) -> Iterator[tuple[Path, str, str, dict]]:
    """(file, type, name, body) of every `resource` or `data` block in the tree."""
    for path in tf_files(root):
        for entry in parsed(path).get(kind, []):
            for block_type, named in entry.items():
                if type_ is None or block_type == type_:
                    for name, body in named.items():
                        yield path, block_type, name, body


def module_blocks(kind: str) -> Iterator[tuple[Path, str, dict]]:
    """(file, name, body) of every `variable` or `output` block."""
    for path in tf_files():
        for entry in parsed(path).get(kind, []):
            for name, body in entry.items():
                yield path, name, body


def one(body: dict, key: str) -> dict:
    """A nested block (python-hcl2 gives a list of one)."""
    value = body[key]
    return value[0] if isinstance(value, list) else value


def test_every_tf_file_parses_and_every_module_has_its_files():
    for path in tf_files():
        assert isinstance(parsed(path), dict), path
    for module in ["network", "gpu_nodes", "storage", "storage/bucket", "services"]:
        names = {p.name for p in (TF_ROOT / "modules" / module).glob("*.tf")}
        assert {"main.tf", "variables.tf", "outputs.tf"} <= names, module
    for path in (TF_ROOT / "tests").glob("*.tftest.hcl"):
        doc = parsed(path)
        assert "mock_provider" in doc and doc["run"], path


def open_ingress(root: Path) -> list[str]:
    """Ingress rules that admit the whole internet."""
    rules = blocks("resource", "aws_vpc_security_group_ingress_rule", root)
    return [
        name
        for _, _, name, body in rules
        if body.get("cidr_ipv4") in OPEN or body.get("cidr_ipv6") in OPEN
    ]


def test_an_ingress_rule_opened_to_the_internet_is_caught(tmp_path):
    import shutil

    root = shutil.copytree(TF_ROOT, tmp_path / "aws")
    services = root / "modules" / "services" / "main.tf"
    vpc_only = "cidr_ipv4         = var.vpc_cidr"
    assert vpc_only in services.read_text()
    services.write_text(services.read_text().replace(vpc_only, 'cidr_ipv4         = "0.0.0.0/0"'))
    assert open_ingress(root) == ["services"]


def test_no_ingress_from_the_internet():
    assert open_ingress(TF_ROOT) == []
    rules = list(blocks("resource", "aws_vpc_security_group_ingress_rule"))
    for path, _, name, body in rules:
        assert body.get("description"), f"{path}: rule {name} has no description"
    for _, _, name, body in blocks("resource", "aws_security_group"):
        for rule in body.get("ingress", []):  # inline rules are not used; none may be open
            assert not OPEN & set(rule.get("cidr_blocks", [])), name
    # CIDR sources: SSH from the operators' variable, MLflow and Prefect from the VPC range.
    by_cidr = {name: body for _, _, name, body in rules if "cidr_ipv4" in body}
    assert set(by_cidr) == {"ssh", "services"}
    ssh = by_cidr["ssh"]
    assert (ssh["from_port"], ssh["to_port"]) == (22, 22)
    assert ssh["cidr_ipv4"] == "${var.ssh_ingress_cidr}"
    assert by_cidr["services"]["cidr_ipv4"] == "${var.vpc_cidr}"
    assert by_cidr["services"]["for_each"] == {"mlflow": 5000, "prefect": 4200}


def test_ssh_cidr_variable_refuses_the_internet_and_has_no_default():
    declared = [
        (path, body) for path, name, body in module_blocks("variable") if name == "ssh_ingress_cidr"
    ]
    assert len(declared) == 2  # the root's and the network module's
    for path, body in declared:
        assert "default" not in body, f"{path}: the SSH range must be chosen, not defaulted"
    (root,) = [body for path, body in declared if path.parent == TF_ROOT]
    condition = one(root, "validation")["condition"]
    assert "0.0.0.0/0" in condition and "::/0" in condition
    # The check lives at the root only, so every module must be handed the validated root value.
    calls = [call for entry in parsed(TF_ROOT / "main.tf")["module"] for call in entry.values()]
    forwarded = [call["ssh_ingress_cidr"] for call in calls if "ssh_ingress_cidr" in call]
    assert forwarded == ["${var.ssh_ingress_cidr}"]


def test_cluster_nodes_talk_freely_only_among_themselves():
    rules = {
        (kind, name): body
        for _, kind, name, body in blocks("resource")
        if kind.startswith("aws_vpc_security_group_") and name == "cluster_self"
    }
    assert len(rules) == 2  # ingress and egress: EFA needs both
    for body in rules.values():
        assert body["ip_protocol"] == "-1"
        assert body["referenced_security_group_id"] == "${aws_security_group.cluster.id}"
        assert body["security_group_id"] == "${aws_security_group.cluster.id}"


def _configs_by_bucket(kind: str) -> dict[str, dict]:
    return {body["bucket"]: body for _, _, _, body in blocks("resource", kind)}


def test_every_bucket_is_encrypted_versioned_private_and_tls_only():
    buckets = [(path, name) for path, _, name, _ in blocks("resource", "aws_s3_bucket")]
    assert len(buckets) == 2  # the project bucket module (dvc, mlflow) and the access logs
    sse = _configs_by_bucket("aws_s3_bucket_server_side_encryption_configuration")
    versioning = _configs_by_bucket("aws_s3_bucket_versioning")
    public = _configs_by_bucket("aws_s3_bucket_public_access_block")
    policies = _configs_by_bucket("aws_s3_bucket_policy")
    for path, name in buckets:
        ref = f"${{aws_s3_bucket.{name}.id}}"
        rule = one(one(sse[ref], "rule"), "apply_server_side_encryption_by_default")
        expected = "AES256" if name == "logs" else "aws:kms"  # log delivery cannot use KMS
        assert rule["sse_algorithm"] == expected, path
        assert one(versioning[ref], "versioning_configuration")["status"] == "Enabled", path
        flags = ["block_public_acls", "block_public_policy", "ignore_public_acls"]
        assert all(public[ref][flag] is True for flag in [*flags, "restrict_public_buckets"])
        assert ref in policies, f"{path}: bucket {name} has no TLS-only policy"
    tls = [body for _, _, _, body in blocks("data", "aws_iam_policy_document")]
    deny_http = [
        s
        for doc in tls
        for s in doc.get("statement", [])
        if s.get("effect") == "Deny"
        and one(s, "condition")["variable"] == "aws:SecureTransport"
        and one(s, "condition")["values"] == ["false"]
    ]
    assert len(deny_http) == 2


def test_instances_require_imdsv2_and_encrypt_their_volumes():
    instances = list(blocks("resource", "aws_instance")) + list(
        blocks("resource", "aws_launch_template")
    )
    assert len(instances) == 3  # GPU launch template, GPU nodes, services host
    for path, kind, name, body in instances:
        meta = one(body, "metadata_options")
        assert meta["http_tokens"] == "required", f"{path}: {kind}.{name} allows IMDSv1"
        assert meta["http_put_response_hop_limit"] == 1
        if kind == "aws_instance":
            root = one(body, "root_block_device")
            assert root["encrypted"] is True and root["kms_key_id"] == "${var.kms_key_arn}"
            assert (
                "associate_public_ip_address" not in body or not body["associate_public_ip_address"]
            )
    for _, _, _, body in blocks("resource", "aws_launch_template"):
        for nic in body["dynamic"][0]["network_interfaces"]["content"]:
            assert nic["interface_type"] == "efa" and nic["associate_public_ip_address"] is False
        assert one(body, "placement")["group_name"] == "${aws_placement_group.this.name}"
    (placement,) = [b for _, _, _, b in blocks("resource", "aws_placement_group")]
    assert placement["strategy"] == "cluster"


def test_database_is_private_encrypted_and_tls_only():
    (db,) = [body for _, _, _, body in blocks("resource", "aws_db_instance")]
    assert db["publicly_accessible"] is False and db["storage_encrypted"] is True
    assert db["manage_master_user_password"] is True and "password" not in db
    (group,) = [body for _, _, _, body in blocks("resource", "aws_db_parameter_group")]
    params = {p["name"]: p["value"] for p in group["parameter"]}
    assert params["rds.force_ssl"] == "1"
    (fsx,) = [body for _, _, _, body in blocks("resource", "aws_fsx_lustre_file_system")]
    assert fsx["kms_key_id"] == "${var.kms_key_arn}"


# Actions AWS offers on no narrower resource than "*".
UNSCOPABLE_ACTIONS = {"ecr:GetAuthorizationToken", "sts:AssumeRole"}


def _statements() -> Iterator[tuple[str, dict]]:
    for path, _, name, body in blocks("data", "aws_iam_policy_document"):
        for statement in body.get("statement", []):
            yield f"{path.relative_to(TF_ROOT)}:{name}", statement


def test_policy_documents_are_least_privilege():
    seen = 0
    for where, statement in _statements():
        seen += 1
        actions = statement["actions"]
        allow = statement.get("effect", "Allow") == "Allow"
        if where.endswith("main.tf:kms"):  # the key policy: "*" there means this key
            continue
        if allow:
            assert not any(a == "*" or a.endswith(":*") for a in actions), (where, actions)
        resources = statement.get("resources")
        if resources == ["*"] and allow:
            assert set(actions) <= UNSCOPABLE_ACTIONS, (where, actions)
        if resources is None:  # trust policies name a principal instead
            assert set(actions) == {"sts:AssumeRole"}, where
    assert seen >= 15


def test_node_profile_touches_only_the_project_buckets_key_image_and_ssh_key():
    (node,) = [b for p, _, n, b in blocks("data", "aws_iam_policy_document") if n == "node"]
    by_sid = {s["sid"]: s for s in node["statement"]}
    assert by_sid["ListProjectBuckets"]["resources"] == "${var.bucket_arns}"
    objects = by_sid["ReadWriteProjectObjects"]["resources"]
    assert objects.startswith("${[for arn in var.bucket_arns : ") and objects.endswith('/*"]}')
    assert by_sid["UseProjectKey"]["resources"] == ["${var.kms_key_arn}"]
    assert by_sid["PullTrainingImage"]["resources"] == ["${local.image_repository_arn}"]
    s3_actions = {a for s in node["statement"] for a in s["actions"] if a.startswith("s3:")}
    assert s3_actions <= {
        "s3:ListBucket",
        "s3:GetBucketLocation",
        "s3:GetObject",
        "s3:PutObject",
        "s3:DeleteObject",
        "s3:AbortMultipartUpload",
    }
    # ...and the buckets it gets are exactly the storage module's two data buckets.
    (storage_outputs,) = [TF_ROOT / "modules" / "storage" / "outputs.tf"]
    arns = [b for p, n, b in module_blocks("output") if p == storage_outputs and n == "bucket_arns"]
    assert arns[0]["value"] == ["${module.dvc.arn}", "${module.mlflow.arn}"]


def test_variables_are_typed_documented_and_validated():
    variables = list(module_blocks("variable"))
    assert len(variables) >= 50
    for path, name, body in variables:
        assert body.get("type"), f"{path}: variable {name} has no type"
        assert body.get("description"), f"{path}: variable {name} has no description"
    root = {n: b for p, n, b in variables if p.parent == TF_ROOT}
    must_validate = {
        "name",
        "region",
        "ssh_ingress_cidr",
        "node_count",
        "instance_type",
        "training_image",
        "fsx_storage_capacity_gib",
    }
    for name in must_validate:
        assert root[name].get("validation"), f"root variable {name} has no validation"
    assert root["instance_type"]["default"] == "p5.48xlarge"


def test_root_outputs_are_what_the_launch_reads():
    outputs = {n: b for p, n, b in module_blocks("output") if p.parent == TF_ROOT}
    assert set(REQUIRED_OUTPUTS) <= set(outputs)
    for name, body in outputs.items():
        assert body.get("description"), f"output {name} has no description"


@pytest.mark.parametrize(
    "template",
    ["modules/gpu_nodes/user_data.sh.tftpl", "modules/services/services_user_data.sh.tftpl"],
)
def test_user_data_holds_no_secret(template):
    text = (TF_ROOT / template).read_text()
    # Secrets are fetched at boot from SSM / Secrets Manager, never rendered into user data.
    assert not re.search(r"(?i)(password|secret|private_key)\s*=\s*\$\{", text)
    assert "get-parameter" in text or "get-secret-value" in text
