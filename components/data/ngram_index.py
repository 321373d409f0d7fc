"""Which texts share a run of words with which indexed texts: one index for the refinery's
decontamination (components/data/decontam.py) and for evaluation's contamination and
regurgitation reports (components/evaluation/contamination.py, safety.py), so that the three
apply the same rule.

The rule (GPT-3, Brown et al. 2020, appendix C): words normalised by `near_dedup.normalise`; an
indexed text of at least n words is looked for by its n-grams, a shorter one as a whole if it
has at least `min_words` words (fewer are too generic to match safely).

The indexed texts are few (eval items, answers) and the texts searched many (a corpus), so a
search builds only the windows that start with a word some indexed sequence starts with.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator

from components.data.near_dedup import normalise

Gram = tuple[str, ...]


def ngrams(words: list[str], n: int) -> set[Gram]:
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def text_grams(text: str, n: int) -> set[Gram]:
    """The n-grams of a text (normalised words): e.g. a prompt's, to exclude from an answer's."""
    return ngrams(normalise(text).split(), n)


class NgramIndex:
    """Texts indexed under keys (an eval item, an eval set, an answer); several texts may share
    a key, and a sequence indexed under several keys counts for each."""

    def __init__(self, n: int, min_words: int):
        # A text of n words or more is always looked for (by its n-grams), whatever min_words.
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

    def hits(self, text: str) -> Iterator[Gram]:
        """The distinct indexed sequences found in `text`, in the order they first occur
        (by position, then shorter first)."""
        words = normalise(text).split()
        lengths = sorted(self.lengths)
        seen: set[Gram] = set()
        for i, w in enumerate(words):
            if w not in self.first_words:
                continue
            for k in lengths:
                if i + k > len(words):
                    break
                g = tuple(words[i : i + k])
                if g in self.grams and g not in seen:
                    seen.add(g)
                    yield g

    def counts(self, text: str) -> Counter[str]:
        """{key: how many distinct indexed sequences of that key `text` contains}."""
        return Counter(key for g in self.hits(text) for key in self.grams[g])

    def matches(self, texts: Iterable[str]) -> dict[str, str]:
        """{key: one matching sequence (the first found)} for every key found in `texts`."""
        found: dict[str, str] = {}
        for text in texts:
            for g in self.hits(text):
                for key in self.grams[g]:
                    found.setdefault(key, " ".join(g))
        return found
