"""How `llmops lineage` prints a chain and a document's versions for a person (`--json` prints
the same data for machines)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rich.table import Table
from rich.tree import Tree

from components.config import flatten
from components.tracking.trace import DocumentHit, Version


def _short(digest: str) -> str:
    return digest[:12] + (".dir" if digest.endswith(".dir") else "") if digest else "-"


def _params_lines(section: Any) -> list[str]:
    if not isinstance(section, Mapping):
        return [str(section)]
    return [f"{k} = {v}" for k, v in flatten(section).items()]


def _version_node(v: Version) -> Tree:
    aliases = f" @{', @'.join(v.aliases)}" if v.aliases else ""
    commit = f"{v.commit[:12]}{' (dirty)' if v.dirty else ''}"
    node = Tree(f"[bold]{v.ref}[/bold]{aliases}  stage {v.stage}  commit {commit}")
    if v.experiment:
        node.add(f"experiment {v.experiment}")
    node.add(
        f"data {_short(v.data_hash)}  params {v.params_hash or '-'}  weights {_short(v.model_hash)}"
    )
    if v.reward_model:
        node.add(f"reward model {v.reward_model}")
    section = node.add(f"params.{v.stage}")
    for line in _params_lines(v.own_params()):
        section.add(line)
    if v.sources:
        sources = node.add(f"corpus: {sum(v.sources.values())} documents")
        for source, n in v.sources.items():
            sources.add(f"{source}: {n}")
    if v.evaluation:
        node.add("evaluation " + ", ".join(f"{k}={x}" for k, x in v.evaluation.items()))
    if v.contamination:
        node.add("contamination " + ", ".join(f"{k}={x:.1%}" for k, x in v.contamination.items()))
    for d in v.decisions:
        node.add(f"promotion: {d.get('verdict', '')} {d.get('at', '')} — {d.get('reason', '')}")
    if not v.parent:
        origin = v.init_origin or "scratch"
        node.add(
            f"trained from {origin}" + (f" (hash {_short(v.init_hash)})" if v.init_hash else "")
        )
    return node


def chain_tree(chain: Sequence[Version]) -> Tree:
    """The asked-for version at the root, each parent nested below its child."""
    root = _version_node(chain[0])
    node = root
    for v in chain[1:]:
        node = node.add(_version_node(v))
    return root


def hits_table(source_id: str, hits: Sequence[DocumentHit]) -> Table:
    table = Table(title=f"registered versions trained on document {source_id!r}")
    for column in ("version", "stage", "how", "data"):
        table.add_column(column)
    for h in hits:
        table.add_row(h.ref, h.stage, h.how, _short(h.data_hash))
    return table
