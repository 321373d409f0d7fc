"""Contamination report: how many items of each eval set share an n-gram with the training
corpus, by the refinery's decontamination rule and index (components/data/ngram_index.py).

Curation already drops training documents that overlap `eval.jsonl` and `prefs_test.jsonl`, so
those two should read 0: the report checks that it held for the corpus that was trained on, and
measures the sets curation does not know about (judge and adversarial prompts). An item too
short to be matched (< `min_words` words) is counted as `unchecked`, not as clean.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from components.data.decontam import item_text
from components.data.ngram_index import NgramIndex


@dataclass(frozen=True)
class Overlap:
    items: int
    checked: int  # long enough to be matched
    contaminated: int
    examples: tuple[str, ...]  # a few matching word sequences

    @property
    def rate(self) -> float:
        """Contaminated share of all items (unchecked ones count as clean: say so next to it)."""
        return self.contaminated / self.items if self.items else 0.0


def _group(name: str, row: Mapping[str, Any], by: str | None) -> str:
    return f"{name}/{row[by]}" if by and by in row else name


def contamination(
    eval_sets: Mapping[str, tuple[Sequence[Mapping[str, Any]], str | None]],
    corpus: Iterable[str],
    n: int,
    min_words: int,
) -> dict[str, Overlap]:
    """{set name: Overlap} and {set/group: Overlap} for sets given a group key (e.g. `task`).

    `eval_sets`: name -> (rows, group key or None)."""
    index = NgramIndex(n, min_words)
    members: dict[str, list[str]] = defaultdict(list)  # set and set/group -> item keys
    for name, (rows, by) in eval_sets.items():
        for i, row in enumerate(rows):
            key = f"{name}#{i}"
            index.add(key, item_text(dict(row)))
            members[name].append(key)
            if by:
                members[_group(name, row, by)].append(key)
    found = index.matches(corpus)
    report = {}
    for group, keys in members.items():
        hits = [found[k] for k in keys if k in found]
        report[group] = Overlap(
            items=len(keys),
            checked=sum(k in index.checked for k in keys),
            contaminated=len(hits),
            examples=tuple(hits[:3]),
        )
    return report
