"""ingest stage: raw sources (text, HTML, JSONL) → normalised documents with ids and sources.

Layout of the raw directory: `<raw>/<source>/**/*.{txt,html}` and `<raw>/<source>.jsonl`
(records with `id` and `text`). Nothing is dropped silently: every record that cannot become a
document goes to the quarantine shard with a reason code.
"""

from __future__ import annotations

import json
import logging
import unicodedata
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import trafilatura
from tqdm import tqdm

from components.config import IngestParams, StageParams
from components.data.documents import (
    DOCS_FILE,
    QUARANTINE_FILE,
    Doc,
    Rejected,
    doc_id,
    write_docs,
    write_quarantine,
)
from components.stage import StageResult
from components.tracking.stage_run import Tracker

log = logging.getLogger(__name__)

# Reason codes.
BAD_ENCODING = "bad_encoding"
BAD_JSON = "bad_json"
MISSING_TEXT = "missing_text"
EMPTY_TEXT = "empty_text"
NO_HTML_TEXT = "no_html_text"
TOO_LARGE = "too_large"
UNKNOWN_SOURCE = "unknown_source"
UNSUPPORTED_FILE = "unsupported_file"


class Reads(StageParams):
    ingest: IngestParams


@dataclass(frozen=True)
class Paths:
    raw: Path
    out: Path  # directory: docs.parquet + quarantine.parquet
    metrics: Path


def normalize(text: str, form: str) -> str:
    # NFC keeps visually identical strings byte-identical, so exact dedup and hashing agree.
    text = unicodedata.normalize(form, text).replace("\r\n", "\n").replace("\r", "\n")
    return text.strip()


def extract_html(html: str) -> str | None:
    """Main text of an HTML page (boilerplate and navigation removed) or None."""
    return trafilatura.extract(html, include_comments=False, include_tables=True, favor_recall=True)


def _read_text(path: Path) -> str | Rejected:
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        return Rejected("", "", str(path), BAD_ENCODING, str(err), "")


def read_source_file(path: Path, source: str, raw: Path) -> Iterator[tuple[Doc, str] | Rejected]:
    origin = path.relative_to(raw).as_posix()
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        yield from read_jsonl(path, source, origin)
        return
    content = _read_text(path)
    if isinstance(content, Rejected):
        yield Rejected(doc_id(source, origin), source, origin, content.reason, content.detail, "")
        return
    if suffix in {".html", ".htm"}:
        text = extract_html(content)
        if not text:
            yield Rejected(
                doc_id(source, origin),
                source,
                origin,
                NO_HTML_TEXT,
                "no main text found",
                content[:2000],
            )
            return
    elif suffix in {".txt", ".md", ""}:
        text = content
    else:
        yield Rejected(doc_id(source, origin), source, origin, UNSUPPORTED_FILE, suffix, "")
        return
    yield Doc(doc_id(source, origin), text, source, source_id=origin), origin


def read_jsonl(path: Path, source: str, origin: str) -> Iterator[tuple[Doc, str] | Rejected]:
    with path.open("rb") as f:
        for lineno, raw_line in enumerate(f, start=1):
            where = f"{origin}:{lineno}"
            did = doc_id(source, where)
            try:
                line = raw_line.decode("utf-8")
            except UnicodeDecodeError as err:
                yield Rejected(did, source, where, BAD_ENCODING, str(err), "")
                continue
            if not line.strip():
                continue  # blank separator lines are not records
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                yield Rejected(did, source, where, BAD_JSON, str(err), line[:2000])
                continue
            if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                yield Rejected(
                    did, source, where, MISSING_TEXT, "no string `text` field", line[:2000]
                )
                continue
            rid = record.get("id")
            did = doc_id(source, f"{origin}:{rid}" if rid else where)
            # The user's own id, to find their record in every later table; else file:line.
            source_id = str(rid) if rid not in (None, "") else where
            yield Doc(did, record["text"], source, source_id=source_id), where


def discover(raw: Path) -> Iterator[tuple[Path, str]]:
    """(file, source) pairs: the first path component under `raw` names the source."""
    for path in sorted(p for p in raw.rglob("*") if p.is_file()):
        rel = path.relative_to(raw)
        source = rel.parts[0] if len(rel.parts) > 1 else path.stem
        yield path, source


def ingest(
    raw: Path, allowed_sources: tuple[str, ...], unicode_form: str, max_doc_chars: int | None = None
) -> tuple[list[Doc], list[Rejected]]:
    docs: list[Doc] = []
    rejected: list[Rejected] = []
    files = list(discover(raw))
    for path, source in tqdm(files, desc="ingest", unit="file"):
        if source not in allowed_sources:
            origin = path.relative_to(raw).as_posix()
            rejected.append(
                Rejected(
                    doc_id(source, origin),
                    source,
                    origin,
                    UNKNOWN_SOURCE,
                    f"allowed: {list(allowed_sources)}",
                    "",
                )
            )
            continue
        for item in read_source_file(path, source, raw):
            if isinstance(item, Rejected):
                rejected.append(item)
                continue
            doc, origin = item
            text = normalize(doc.text, unicode_form)
            if not text:
                rejected.append(Rejected(doc.id, source, origin, EMPTY_TEXT, "", "", doc.source_id))
                continue
            if max_doc_chars is not None and len(text) > max_doc_chars:
                rejected.append(
                    Rejected(
                        doc.id,
                        source,
                        origin,
                        TOO_LARGE,
                        f"{len(text):,} chars > ingest.max_doc_chars {max_doc_chars:,}",
                        text[:2000],
                        doc.source_id,
                    )
                )
                continue
            docs.append(replace(doc, text=text))
    # Records that could not be parsed have no id of their own: their file and line stand in.
    return docs, [r if r.source_id else replace(r, source_id=r.origin) for r in rejected]


def failure_message(raw: Path, rejected: list[Rejected], quarantine: Path) -> str:
    """Why nothing could be read: the top reasons with counts and one example each."""
    if not rejected:
        return f"no document found under {raw}: expected <source>/**/*.txt|html or <source>.jsonl"
    by_reason = Counter(r.reason for r in rejected)
    examples = {}
    for r in rejected:
        examples.setdefault(r.reason, r)
    top = "; ".join(
        f"{reason}: {n} (e.g. {examples[reason].origin}"
        + (f": {examples[reason].detail[:120]}" if examples[reason].detail else "")
        + ")"
        for reason, n in by_reason.most_common(3)
    )
    return (
        f"no document could be read from {raw}: all {len(rejected)} record(s) quarantined. "
        f"Top reasons: {top}. Every record with its reason is in {quarantine}."
    )


def run(params: Reads, paths: Paths, tracker: Tracker) -> StageResult:
    if not paths.raw.is_dir():
        raise FileNotFoundError(f"raw data directory {paths.raw} does not exist")
    docs, rejected = ingest(
        paths.raw, params.ingest.sources, params.ingest.unicode_form, params.ingest.max_doc_chars
    )
    paths.out.mkdir(parents=True, exist_ok=True)
    # The quarantine first: when nothing could be read, it is what the error points to.
    write_quarantine(rejected, paths.out / QUARANTINE_FILE)
    if not docs:
        raise ValueError(failure_message(paths.raw, rejected, paths.out / QUARANTINE_FILE))
    write_docs(docs, paths.out / DOCS_FILE)
    by_source = Counter(d.source for d in docs)
    by_reason = Counter(r.reason for r in rejected)
    for r in rejected:
        log.warning("quarantined %s (%s): %s", r.origin, r.reason, r.detail[:200])
    metrics: dict = {
        "docs": len(docs),
        "quarantined": len(rejected),
        "chars": sum(len(d.text) for d in docs),
    }
    metrics.update({f"docs.{s}": n for s, n in sorted(by_source.items())})
    metrics.update({f"quarantined.{r}": n for r, n in sorted(by_reason.items())})
    return StageResult(metrics=metrics)
