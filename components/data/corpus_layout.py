"""The on-disk layout of the mixed and packed corpora: the file names and id conventions that
the stage writing a corpus and the stages reading it (and lineage) share."""

from __future__ import annotations

from components.data.documents import Doc

# The mix stage's report beside its documents: requested and realised share per group.
MIXTURE_FILE = "mixture.json"
# A document the mixture repeats gets the ids `<id>@<k>`, k >= 1.
COPY_SEP = "@"

# The pack stage's description of its token streams (sequence length, splits, files).
INDEX_FILE = "index.json"
# Its per-document table: components/constants.py DOCUMENTS_FILE (lineage reads it too).


def group_of(doc: Doc, by: str) -> str:
    """The mixture group of `doc` when the mixture is by `source` or by language."""
    return doc.source if by == "source" else (doc.lang or "und")


def base_id(doc_id: str) -> str:
    """The id of the curated document a (possibly repeated) mixed document came from."""
    return doc_id.split(COPY_SEP, 1)[0]
