"""Which texts share a run of words with a corpus: contamination of eval sets and regurgitation
of training text use the same rule as the refinery's decontamination
(components/data/decontam.py): words normalised by `near_dedup.normalise`, n-gram match, a text
shorter than n words matched whole if it has at least `min_words` words.

The texts to look for are few (eval items, answers) and the corpus large, so the texts are
indexed and the corpus streamed once: only windows whose first word starts some indexed
sequence are built.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from components.data.decontam import ngrams
from components.data.near_dedup import normalise

Gram = tuple[str, ...]


class NgramIndex:
    def __init__(self, n: int, min_words: int):
        self.n, self.min_words = n, min(min_words, n)
        self.grams: dict[Gram, set[str]] = defaultdict(set)  # sequence -> keys of texts
        self.lengths: set[int] = set()
        self.first_words: set[str] = set()
        self.checked: set[str] = set()  # keys long enough to be looked for

    def add(self, key: str, text: str, exclude: Iterable[Gram] = ()) -> bool:
        """Index `text` under `key`; False if it is too short to be looked for. `exclude`:
        sequences not to count (e.g. what the prompt itself gave the model)."""
        words = normalise(text).split()
        if len(words) < self.min_words:
            return False
        grams = ngrams(words, self.n) if len(words) >= self.n else {tuple(words)}
        grams -= set(exclude)
        for g in grams:
            self.grams[g].add(key)
            self.lengths.add(len(g))
            self.first_words.add(g[0])
        self.checked.add(key)
        return True

    def matches(self, texts: Iterable[str]) -> dict[str, str]:
        """{key: one matching sequence} for every indexed text found in `texts`."""
        found: dict[str, str] = {}
        lengths = sorted(self.lengths)
        for text in texts:
            words = normalise(text).split()
            for i, w in enumerate(words):
                if w not in self.first_words:
                    continue
                for k in lengths:
                    keys = self.grams.get(tuple(words[i : i + k]))
                    for key in keys or ():
                        found.setdefault(key, " ".join(words[i : i + k]))
        return found


def text_grams(text: str, n: int) -> set[Gram]:
    """The n-grams of a text (normalised words): e.g. a prompt's, to exclude from an answer's."""
    return ngrams(normalise(text).split(), n)
