"""validate_packed stage: a Great Expectations gate on the token streams, before pretraining.

Two suites, each with its Data Docs: `packed_sequences` (one row per packed sequence: token ids
inside the vocabulary, both splits present, train tokens within the configured bounds) and
`mixture` (one row per mixture group: realised token share within `max_share_error` of the
requested share). A failing suite fails the stage, and pretraining does not run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import great_expectations as gx
import great_expectations.expectations as gxe
import numpy as np
import pandas as pd

from components.config import PackParams, StageParams, ValidatePackedParams
from components.data.corpus_layout import INDEX_FILE
from components.data.expectations import (
    failed_expectations,
    save_result,
    stop_if_failed,
    validate_frame,
)
from components.stage import StageResult
from components.tracking.stage_run import Tracker


class Reads(StageParams):
    pack: PackParams
    validate_packed: ValidatePackedParams


@dataclass(frozen=True)
class Paths:
    data: Path  # packed directory
    report: Path  # GE validation results (JSON)
    docs_site: Path  # GE Data Docs (HTML), one site per suite
    metrics: Path


def sequences_frame(data: Path) -> pd.DataFrame:
    frames = []
    for split in ("train", "val"):
        arr = np.load(data / f"{split}.npy", mmap_mode="r")
        frames.append(
            pd.DataFrame(
                {
                    "split": split,
                    "tokens": arr.shape[1],
                    "min_id": arr.min(axis=1).astype(int),
                    "max_id": arr.max(axis=1).astype(int),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def mixture_frame(index: dict) -> pd.DataFrame:
    realised = index["train_token_share"]
    rows = [
        {
            "group": g,
            "requested": req,
            "realised": realised.get(g, 0.0),
            "share_error": abs(realised.get(g, 0.0) - req),
        }
        for g, req in sorted(index["requested_share"].items())
    ]
    return pd.DataFrame(rows)


def sequences_suite(params: Reads, vocab_size: int) -> gx.ExpectationSuite:
    cfg, seq_len = params.validate_packed, params.pack.seq_len
    max_rows = None if cfg.max_train_tokens is None else cfg.max_train_tokens // seq_len
    return gx.ExpectationSuite(
        name="packed_sequences",
        expectations=[
            gxe.ExpectColumnDistinctValuesToEqualSet(column="split", value_set=["train", "val"]),
            gxe.ExpectColumnValuesToBeBetween(column="min_id", min_value=0),
            gxe.ExpectColumnValuesToBeBetween(column="max_id", max_value=vocab_size - 1),
            gxe.ExpectColumnValuesToBeBetween(
                column="tokens", min_value=seq_len, max_value=seq_len
            ),
            # Rows of the train split times seq_len = train tokens.
            gxe.ExpectColumnSumToBeBetween(
                column="train_tokens",
                min_value=cfg.min_train_tokens,
                max_value=None if max_rows is None else max_rows * seq_len,
            ),
        ],
    )


def mixture_suite(params: Reads) -> gx.ExpectationSuite:
    return gx.ExpectationSuite(
        name="mixture",
        expectations=[
            gxe.ExpectTableRowCountToBeBetween(min_value=1),
            gxe.ExpectColumnValuesToBeBetween(
                column="share_error", max_value=params.validate_packed.max_share_error
            ),
        ],
    )


def run(params: Reads, paths: Paths, tracker: Tracker) -> StageResult:
    index = json.loads((paths.data / INDEX_FILE).read_text())
    seqs = sequences_frame(paths.data)
    seqs["train_tokens"] = np.where(seqs["split"] == "train", seqs["tokens"], 0)
    mixture = mixture_frame(index)
    results = {
        "packed_sequences": validate_frame(
            seqs, sequences_suite(params, index["vocab_size"]), paths.docs_site / "packed_sequences"
        ),
        "mixture": validate_frame(mixture, mixture_suite(params), paths.docs_site / "mixture"),
    }
    save_result(results, paths.report, paths.docs_site, tracker)
    stop_if_failed(
        [f"{name}: {e}" for name, r in results.items() for e in failed_expectations(r)],
        paths.data,
        paths.report,
        "Adjust params.mix / params.validate_packed or the data; pretraining was not run.",
    )
    return StageResult(
        metrics={
            "sequences": len(seqs),
            "train_tokens": int(seqs["train_tokens"].sum()),
            "max_share_error": round(float(mixture["share_error"].max()), 4),
            "expectations": sum(
                r["statistics"]["evaluated_expectations"] for r in results.values()
            ),
        }
    )
