"""pack stage: tokenise curated documents and pack them into fixed-length sequences.

Output: `train.npy` and `val.npy`, arrays of shape (n_sequences, seq_len) that are memory-mapped
by training, plus `index.json` describing them. Documents are joined with EOS so the model
learns document boundaries; the split is by curated document, so no document (nor a repeated
copy of it from the mixture) straddles train and val. The realised token share of each
mixture group is reported next to the share the mix stage was asked for.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from components.config import PackParams, StageParams
from components.constants import DOCUMENTS_FILE
from components.data.corpus_layout import (
    INDEX_FILE,
    MIXTURE_FILE,
    base_id,
    group_of,
)
from components.data.documents import DOCS_FILE, Doc, read_docs
from components.stage import StageResult
from components.tracking.stage_run import Tracker


class Reads(StageParams):
    seed: int
    pack: PackParams


@dataclass(frozen=True)
class Paths:
    docs: Path  # mixed directory (docs.parquet + mixture.json)
    tokenizer: Path
    out: Path  # packed directory
    metrics: Path


def is_validation(doc_id: str, val_fraction: float, seed: int) -> bool:
    h = int(hashlib.sha1(f"{seed}:{doc_id}".encode()).hexdigest()[:8], 16)
    return h / 0xFFFFFFFF < val_fraction


def pack_tokens(token_lists: list[list[int]], eos_id: int, seq_len: int) -> np.ndarray:
    """Concatenate documents separated by EOS; cut into (n, seq_len), dropping the tail."""
    flat = [t for ids in token_lists for t in (*ids, eos_id)]
    n = len(flat) // seq_len
    dtype = np.uint16 if max(flat, default=0) < 2**16 else np.int32
    return np.asarray(flat[: n * seq_len], dtype=dtype).reshape(n, seq_len)


def tokenize(
    texts: list[str], tokenizer: PreTrainedTokenizerBase, batch: int = 64
) -> list[list[int]]:
    out: list[list[int]] = []
    for i in tqdm(range(0, len(texts), batch), desc="tokenize", unit="batch"):
        out.extend(tokenizer(texts[i : i + batch], add_special_tokens=False)["input_ids"])
    return out


def token_shares(docs: list[Doc], tokens: list[list[int]], by: str) -> dict[str, float]:
    counts: dict[str, int] = {}
    for doc, ids in zip(docs, tokens, strict=True):
        g = group_of(doc, by)
        counts[g] = counts.get(g, 0) + len(ids) + 1  # + EOS
    total = sum(counts.values())
    return {g: round(n / total, 6) for g, n in sorted(counts.items())}


def document_spans(docs: list[Doc], tokens: list[list[int]], split: str) -> list[dict]:
    rows, start = [], 0
    for doc, ids in zip(docs, tokens, strict=True):
        rows.append(
            {
                "id": doc.id,
                "source_id": doc.source_id,
                "source": doc.source,
                "split": split,
                "token_start": start,
                "tokens": len(ids),
            }
        )
        start += len(ids) + 1  # + EOS
    return rows


def run(params: Reads, paths: Paths, tracker: Tracker) -> StageResult:
    cfg = params.pack
    tokenizer = AutoTokenizer.from_pretrained(paths.tokenizer)
    docs = read_docs(paths.docs / DOCS_FILE)
    mixture = json.loads((paths.docs / MIXTURE_FILE).read_text())
    val_docs = [d for d in docs if is_validation(base_id(d.id), cfg.val_fraction, params.seed)]
    train_docs = [
        d for d in docs if not is_validation(base_id(d.id), cfg.val_fraction, params.seed)
    ]
    if not val_docs or not train_docs:
        raise ValueError(
            f"pack.val_fraction={cfg.val_fraction} left an empty split "
            f"({len(train_docs)} train / {len(val_docs)} val documents)"
        )
    eos = tokenizer.eos_token_id
    train_tokens = tokenize([d.text for d in train_docs], tokenizer)
    shares = token_shares(train_docs, train_tokens, mixture["by"])
    train = pack_tokens(train_tokens, eos, cfg.seq_len)
    val_tokens = tokenize([d.text for d in val_docs], tokenizer)
    val = pack_tokens(val_tokens, eos, cfg.seq_len)
    if len(val) == 0:
        raise ValueError("validation split is shorter than one sequence; raise val_fraction")
    paths.out.mkdir(parents=True, exist_ok=True)
    np.save(paths.out / "train.npy", train)
    np.save(paths.out / "val.npy", val)
    spans = document_spans(train_docs, train_tokens, "train")
    spans += document_spans(val_docs, val_tokens, "val")
    pd.DataFrame(spans).to_parquet(paths.out / DOCUMENTS_FILE, index=False)
    index = {
        "seq_len": cfg.seq_len,
        "dtype": str(train.dtype),
        "vocab_size": len(tokenizer),
        "train_sequences": int(train.shape[0]),
        "val_sequences": int(val.shape[0]),
        "train_documents": len(train_docs),
        "val_documents": len(val_docs),
        "mixture_by": mixture["by"],
        "requested_share": {g: v["requested_share"] for g, v in mixture["groups"].items()},
        "train_token_share": shares,
        "documents": DOCUMENTS_FILE,  # id, source_id, source, split, token_start, tokens
    }
    (paths.out / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
    metrics: dict = {
        "train_sequences": index["train_sequences"],
        "val_sequences": index["val_sequences"],
        "train_tokens": int(train.size),
        "val_tokens": int(val.size),
    }
    metrics.update({f"token_share.{g}": round(v, 4) for g, v in shares.items()})
    metrics.update({f"requested_share.{g}": v for g, v in index["requested_share"].items()})
    return StageResult(metrics=metrics)
