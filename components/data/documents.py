"""The document table shared by data stages: schema, Parquet I/O, quarantine records."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

DOCS_FILE = "docs.parquet"
QUARANTINE_FILE = "quarantine.parquet"

# `source_id`: the record's own id (a JSONL record's `id`), else its file (and line); kept by
# every stage so a user can find what became of their record. Set by curation: `lang` by
# language ID ("" before it), `quality` by the quality model (None when the model is off).
DOC_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("text", pa.string()),
        ("source", pa.string()),
        ("lang", pa.string()),
        ("quality", pa.float64()),
        ("source_id", pa.string()),
    ]
)
QUARANTINE_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("source", pa.string()),
        ("origin", pa.string()),
        ("reason", pa.string()),
        ("detail", pa.string()),
        ("text", pa.string()),
        ("source_id", pa.string()),
        ("rule_set", pa.string()),
    ]
)


@dataclass(frozen=True)
class Doc:
    id: str
    text: str
    source: str
    lang: str = ""
    quality: float | None = None
    source_id: str = ""


@dataclass(frozen=True)
class Rejected:
    id: str
    source: str
    # Ingest: the file (and line) the record came from. Curation: the document's id, as
    # documents do not carry their file and line past ingest.
    origin: str
    reason: str  # a reason code constant
    detail: str
    text: str
    source_id: str = ""  # as Doc.source_id; ingest: the record's id if it could be read
    rule_set: str = ""  # curation: the source's rule set whose block dropped it (curate.rule_sets)


def doc_id(source: str, origin: str) -> str:
    return hashlib.sha1(f"{source}:{origin}".encode()).hexdigest()[:16]


def write_docs(docs: Iterable[Doc], path: Path) -> int:
    rows = [asdict(d) for d in docs]
    pq.write_table(pa.Table.from_pylist(rows, schema=DOC_SCHEMA), path)
    return len(rows)


def write_quarantine(rejected: Iterable[Rejected], path: Path) -> int:
    rows = [asdict(r) for r in rejected]
    pq.write_table(pa.Table.from_pylist(rows, schema=QUARANTINE_SCHEMA), path)
    return len(rows)


def read_docs(path: Path) -> list[Doc]:
    columns = [c for c in DOC_SCHEMA.names if c in pq.read_schema(path).names]
    return [Doc(**row) for row in pq.read_table(path, columns=columns).to_pylist()]
