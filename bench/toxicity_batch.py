"""Toxicity scored per document (one classifier call each) vs in batches (one call per batch),
on the bundled corpus's chunks: same decisions, and the time of each, in one process.

    PYTHONPATH=. python -m bench.toxicity_batch
"""

from __future__ import annotations

import time
from pathlib import Path

from components.config import load_params
from components.data.curate import split_long
from components.data.ingest import ingest
from components.data.toxicity import ToxicityFilter


def main() -> None:
    params = load_params(Path("params.yaml"))
    docs, _ = ingest(Path("data/raw"), params.ingest.sources, params.ingest.unicode_form)
    chunks = [c for d in docs for c in split_long(d, params.curate.max_chars_per_doc)]
    tox = ToxicityFilter(params.curate.toxic_line_threshold, params.curate.max_toxic_line_fraction)
    size = params.curate.engine.docs_per_partition
    t0 = time.perf_counter()
    one_by_one = [tox.decide(tox.toxic_fractions([c.text])[0]) for c in chunks]
    t1 = time.perf_counter()
    batched = [
        d for i in range(0, len(chunks), size) for d in tox.filter_batch(chunks[i : i + size])
    ]
    t2 = time.perf_counter()
    assert batched == one_by_one, "batched decisions differ"
    print(
        f"{len(chunks)} chunks, {sum(len(c.text) for c in chunks) / 2**20:.2f} MiB: "
        f"per document {t1 - t0:.2f}s, batched {t2 - t1:.2f}s, "
        f"{(t1 - t0) / (t2 - t1):.1f}x; decisions identical "
        f"({sum(d is not True for d in batched)} toxic)"
    )


if __name__ == "__main__":
    main()
