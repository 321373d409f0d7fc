"""Decontamination: drop training documents that share a long n-gram with an evaluation set.

GPT-3's recipe (Brown et al. 2020, appendix C): 13-gram overlap on normalised words. Eval items
shorter than n words are matched as a whole (their full word sequence), so a short benchmark
question copied verbatim into a web page is still caught. The index
(components/data/ngram_index.py) is the one evaluation's contamination report uses.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from components.data.blocks import Decision
from components.data.documents import Doc
from components.data.ngram_index import NgramIndex

EVAL_CONTAMINATION = "eval_contamination"


def item_text(row: dict) -> str:
    """The text of an eval item in any of the project's task formats."""
    parts = []
    for key in ("prompt", "answer", "chosen"):
        value = row.get(key)
        if isinstance(value, str):
            parts.append(value)
        elif isinstance(value, list):  # conversational: [{"role", "content"}]
            parts += [m.get("content", "") for m in value if isinstance(m, dict)]
    return " ".join(parts)


def load_eval_sets(paths: list[Path]) -> dict[str, list[str]]:
    return {
        p.name: [item_text(json.loads(line)) for line in p.read_text().splitlines() if line.strip()]
        for p in paths
    }


class DecontaminationFilter:
    """Counts contaminated documents per eval set (`contaminated_docs.<file>`, 0 for a clean
    set, so the metrics name every set that was checked)."""

    name = "decontamination"

    def __init__(self, eval_sets: dict[str, list[str]], n: int = 13, min_words: int = 8):
        """Items with fewer than `min_words` words are too generic to match safely."""
        self.index = NgramIndex(n, min_words)  # keyed by eval set: a hit names the set
        for name, texts in eval_sets.items():
            for text in texts:
                self.index.add(name, text)
        self.counters: Counter = Counter({_counter(name): 0 for name in eval_sets})

    def contaminating_sets(self, doc: Doc) -> Counter:
        """{eval set: distinct n-grams (and whole short items) of it that `doc` contains}."""
        return self.index.counts(doc.text)

    def filter(self, doc: Doc) -> Decision:
        hits = self.contaminating_sets(doc)
        if not hits:
            return True
        self.counters.update(_counter(name) for name in hits)
        found = ", ".join(f"{name}: {k} matching n-grams" for name, k in sorted(hits.items()))
        return False, EVAL_CONTAMINATION, found


def _counter(eval_set: str) -> str:
    return f"contaminated_docs.{eval_set}"
