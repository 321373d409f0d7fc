"""`llmops lineage`: what a registered version was built from, and which versions were trained on
a document, answered from what was recorded — never by reading or hashing model weights.

Forward (`trace`): the chain of `parent_model` tags down to the base model or checkpoint; per
version its lineage tags, the params it ran with and its corpus's sources (the registering run's
artifacts, components/tracking/lineage_record.py), its evaluation and the contamination of the
eval sets (the report stage's run for it), and the promotion decisions about it.

Reverse (`versions_with_document`): the corpus a version was trained on is the DVC output whose
hash is its `data_hash` tag; its documents.parquet lists every document's `source_id`. One column
of one file per distinct corpus is read from DVC's cache — not per version (every version after
pretraining shares its parent's corpus) and not per commit. Descendants of a version trained on
the document inherit it.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import pyarrow.parquet as pq
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import (
    INVALID_PARAMETER_VALUE,
    RESOURCE_DOES_NOT_EXIST,
    ErrorCode,
)

from components.constants import (
    DOCUMENTS_FILE,
    EVAL_TAG_PREFIX,
    MODEL_POLICY,
    RUN_TAG_REPORT_OF,
    TAG_DATA_HASH,
    TAG_EXPERIMENT,
    TAG_GIT_COMMIT,
    TAG_INIT_HASH,
    TAG_INIT_ORIGIN,
    TAG_MODEL_HASH,
    TAG_PARAMS_HASH,
    TAG_PARENT_MODEL,
    TAG_REWARD_MODEL,
    TAG_STAGE,
)
from components.registry import audit
from components.tracking.lineage_record import recorded_params, recorded_sources

URI_SCHEME = "models:/"
CONTAMINATION_PREFIX = "contamination."
# The promote stage's decision tags on its run (components/registry/promote.py, audit.py).
_DECISION_KEYS = ("verdict", "reason", "champion_before", "champion_after", "by", "at")


class LineageError(LookupError):
    """What was asked cannot be traced; the message names what is missing and how to get it."""


@dataclass(frozen=True)
class Version:
    name: str
    version: str
    stage: str
    commit: str
    dirty: bool
    experiment: str
    parent: str
    data_hash: str
    params_hash: str
    model_hash: str
    init_origin: str
    init_hash: str
    reward_model: str
    aliases: list[str]
    params: dict[str, Any]  # the whole params file the stage ran with
    sources: dict[str, int]  # curated source -> documents, for the version trained on a corpus
    evaluation: dict[str, str]  # eval.<metric> tags (set by promote)
    contamination: dict[str, float]  # eval set -> contaminated share (the report stage's run)
    decisions: list[dict[str, str]] = field(default_factory=list)

    @property
    def ref(self) -> str:
        return f"{self.name}/{self.version}"

    def own_params(self) -> Any:
        """The section of params.yaml named after the version's stage (what it trains with)."""
        return self.params.get(self.stage, {})

    def to_dict(self) -> dict[str, Any]:
        return {"ref": self.ref, **asdict(self)}


def parse_uri(uri: str) -> tuple[str, str, str]:
    """(name, version, alias) of `models:/name/version` or `models:/name@alias`."""
    if not uri.startswith(URI_SCHEME):
        raise LineageError(f"{uri!r} is not a model URI: use models:/NAME/VERSION or @ALIAS")
    rest = uri[len(URI_SCHEME) :]
    name, at, alias = rest.partition("@")
    if at and name and alias:
        return name, "", alias
    name, slash, version = rest.rpartition("/")
    if not (slash and name and version.isdigit()):
        raise LineageError(f"{uri!r} is not a model URI: use models:/NAME/VERSION or @ALIAS")
    return name, version, ""


def resolve(client: MlflowClient, uri: str) -> ModelVersion:
    name, version, alias = parse_uri(uri)
    try:
        if alias:
            return client.get_model_version_by_alias(name, alias)
        return client.get_model_version(name, version)
    except MlflowException as err:
        # An alias the model does not have is an invalid parameter to MLflow, not a missing one.
        missing = {ErrorCode.Name(RESOURCE_DOES_NOT_EXIST)}
        if alias:
            missing.add(ErrorCode.Name(INVALID_PARAMETER_VALUE))
        if err.error_code not in missing:
            raise
        raise LineageError(
            f"{uri} does not exist in the registry at {mlflow.get_registry_uri()}: check the "
            f"name and version (or alias) in the MLflow UI (`llmops ui`), or set "
            "MLFLOW_TRACKING_URI to the store that holds it"
        ) from err


def _commit_exists(root: Path, sha: str) -> bool:
    proc = subprocess.run(
        ["git", "cat-file", "-e", f"{sha}^{{commit}}"], cwd=root, capture_output=True, check=False
    )
    return proc.returncode == 0


def _contamination(client: MlflowClient, ref: str, experiments: list[str]) -> dict[str, float]:
    runs = client.search_runs(
        experiments,
        f"tags.`{RUN_TAG_REPORT_OF}` = '{ref}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not runs:
        return {}
    return {
        k[len(CONTAMINATION_PREFIX) : -len(".rate")]: v
        for k, v in sorted(runs[0].data.metrics.items())
        if k.startswith(CONTAMINATION_PREFIX) and k.endswith(".rate")
    }


def _decisions(client: MlflowClient, mv: ModelVersion, experiments: list[str]) -> list[dict]:
    """The promote stage's runs that judged `mv`, oldest first, and a rollback of it."""
    out = []
    if mv.name == MODEL_POLICY:  # the one model promote judges; its runs name it by number
        runs = client.search_runs(
            experiments,
            f"tags.`{audit.TAG_PREFIX}challenger_version` = '{mv.version}'",
            order_by=["attributes.start_time ASC"],
        )
        out = [
            {"run_id": r.info.run_id}
            | {k: r.data.tags.get(audit.TAG_PREFIX + k, "") for k in _DECISION_KEYS}
            for r in runs
        ]
    if audit.TAG_ROLLED_BACK in mv.tags:
        out.append({"verdict": "rolled_back", "reason": mv.tags[audit.TAG_ROLLED_BACK]})
    return out


def _version(client: MlflowClient, mv: ModelVersion, root: Path, experiments: list[str]) -> Version:
    ref = f"{mv.name}/{mv.version}"
    tags = mv.tags
    if TAG_GIT_COMMIT not in tags or TAG_STAGE not in tags:
        raise LineageError(
            f"model version {ref} has no lineage tags ({TAG_GIT_COMMIT}, {TAG_STAGE}): it was "
            "registered by hand (e.g. in the MLflow UI), not by a pipeline stage; re-run the "
            "stage that produces it (`dvc repro --force STAGE`) to register a traceable version"
        )
    commit = tags[TAG_GIT_COMMIT]
    sha, dirty = commit.removesuffix("-dirty"), commit.endswith("-dirty")
    if sha != "unknown" and not _commit_exists(root, sha):
        raise LineageError(
            f"model version {ref} was built at commit {sha}, which is not in the repository at "
            f"{root}: fetch it (`git fetch --all`, or from the remote the team pushes to)"
        )
    return Version(
        name=mv.name,
        version=str(mv.version),
        stage=tags[TAG_STAGE],
        commit=sha,
        dirty=dirty,
        experiment=tags.get(TAG_EXPERIMENT, ""),
        parent=tags.get(TAG_PARENT_MODEL, ""),
        data_hash=tags.get(TAG_DATA_HASH, ""),
        params_hash=tags.get(TAG_PARAMS_HASH, ""),
        model_hash=tags.get(TAG_MODEL_HASH, ""),
        init_origin=tags.get(TAG_INIT_ORIGIN, ""),
        init_hash=tags.get(TAG_INIT_HASH, ""),
        reward_model=tags.get(TAG_REWARD_MODEL, ""),
        aliases=sorted(mv.aliases or []),
        params=recorded_params(client, mv),
        sources=dict(recorded_sources(client, mv)),
        evaluation={
            k[len(EVAL_TAG_PREFIX) :]: v
            for k, v in sorted(tags.items())
            if k.startswith(EVAL_TAG_PREFIX)
        },
        contamination=_contamination(client, ref, experiments),
        decisions=_decisions(client, mv, experiments),
    )


def _experiments(client: MlflowClient) -> list[str]:
    return [e.experiment_id for e in client.search_experiments()]


def trace(client: MlflowClient, uri: str, root: Path) -> list[Version]:
    """The version `uri` names, then its parent, and so on down to the first version (trained
    from scratch or from the checkpoint its `init_origin` names)."""
    experiments = _experiments(client)
    chain: list[Version] = []
    mv = resolve(client, uri)
    while True:
        chain.append(_version(client, mv, root, experiments))
        parent = chain[-1].parent
        if not parent:
            return chain
        if any(v.ref == parent for v in chain):
            raise LineageError(f"the parent_model tags of {uri} form a cycle at {parent}")
        name, _, version = parent.rpartition("/")
        try:
            mv = client.get_model_version(name, version)
        except MlflowException as err:
            raise LineageError(
                f"{chain[-1].ref} names parent {parent}, which is not in the registry (deleted?)"
            ) from err


# ---- reverse: which versions were trained on a document ----------------------------------


@dataclass(frozen=True)
class DocumentHit:
    ref: str
    stage: str
    how: str  # "trained on it" or "via <parent ref>"
    data_hash: str


def all_versions(client: MlflowClient) -> Iterator[ModelVersion]:
    token = None
    while True:
        page = client.search_model_versions("", max_results=1000, page_token=token)
        yield from page
        token = page.token
        if not token:
            return


def _documents_path(odb, data_hash: str, root: Path) -> Path | None:
    """documents.parquet inside the DVC output with this `.dir` hash, in the object database
    `odb` (the project's DVC cache); None when that output holds no such file."""
    from dvc_data.hashfile.hash_info import HashInfo
    from dvc_data.hashfile.tree import Tree

    try:
        tree = Tree.load(odb, HashInfo("md5", data_hash))
    except FileNotFoundError as err:
        raise LineageError(
            f"the training data {data_hash} is not in the DVC cache of {root}: "
            "`dvc fetch` (or `dvc pull`) the commit that produced it, then ask again"
        ) from err
    entry = tree.get((DOCUMENTS_FILE,))
    if entry is None or entry[1] is None:
        return None
    path = Path(odb.oid_to_path(entry[1].value))
    if not path.exists():
        raise LineageError(
            f"{DOCUMENTS_FILE} of the training data {data_hash} ({entry[1].value}) is not in "
            f"the DVC cache of {root}: `dvc fetch` it, then ask again"
        )
    return path


def _contains(documents: Path, source_id: str) -> bool:
    table = pq.read_table(documents, columns=["source_id"], filters=[("source_id", "=", source_id)])
    return table.num_rows > 0


def versions_with_document(client: MlflowClient, source_id: str, root: Path) -> list[DocumentHit]:
    """Every registered version whose training data held the document `source_id`: those
    trained on a corpus that lists it, and every version descended from one of them."""
    from dvc.repo import Repo

    versions = [mv for mv in all_versions(client) if mv.tags.get(TAG_DATA_HASH)]
    corpora: dict[str, bool] = {}
    with Repo(str(root)) as repo:
        for data_hash in sorted({mv.tags[TAG_DATA_HASH] for mv in versions}):
            if not data_hash.endswith(".dir"):
                continue  # a single file: task data, not a corpus of documents
            documents = _documents_path(repo.cache.local, data_hash, root)
            corpora[data_hash] = documents is not None and _contains(documents, source_id)
    hits = {
        f"{mv.name}/{mv.version}": DocumentHit(
            f"{mv.name}/{mv.version}",
            mv.tags.get(TAG_STAGE, ""),
            "trained on it",
            mv.tags[TAG_DATA_HASH],
        )
        for mv in versions
        if corpora.get(mv.tags[TAG_DATA_HASH])
    }
    return sorted(_with_descendants(hits, versions).values(), key=_order)


def _with_descendants(
    hits: dict[str, DocumentHit], versions: Iterable[ModelVersion]
) -> dict[str, DocumentHit]:
    children: dict[str, list[ModelVersion]] = {}
    for mv in versions:
        children.setdefault(mv.tags.get(TAG_PARENT_MODEL, ""), []).append(mv)
    todo = list(hits)
    while todo:
        parent = todo.pop()
        for mv in children.get(parent, []):
            ref = f"{mv.name}/{mv.version}"
            if ref not in hits:
                hits[ref] = DocumentHit(
                    ref, mv.tags.get(TAG_STAGE, ""), f"via {parent}", mv.tags[TAG_DATA_HASH]
                )
                todo.append(ref)
    return hits


def _order(hit: DocumentHit) -> tuple[str, int]:
    name, _, version = hit.ref.rpartition("/")
    return name, int(version)
