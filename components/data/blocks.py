"""The refinery's blocks, in datatrove's shape, and the steps that run them on a batch.

- A filter: `filter(doc) -> True | (False, reason, detail)`. The reason is a constant of the
  block's module; the detail says what was found, for the quarantine. Nothing is remembered
  per document: the decision carries everything.
- A transform: `apply(doc) -> doc`.
- A filter whose model is cheap on many inputs and slow one by one (a classifier) may also
  offer `filter_batch(docs) -> [Decision]`, the same decisions in one call; a chain uses it.
- Both expose `counters`: a Counter whose keys are already prefixed by what they count
  (`pii.EMAIL`, `c4_lines_removed.javascript`), so the refinery adds them up without knowing
  which block said what. A filter with nothing to count has an empty one.
- A step runs a batch of documents (a partition, or the whole corpus) and has `counters` too:
  a `Chain` of filters and transforms, or a block that needs the batch at once (the quality
  model scores a partition in one call; MinHash signatures travel next to the documents).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

from components.data.documents import Doc, Rejected

if TYPE_CHECKING:
    from datasketch import LeanMinHash

# datatrove's filter result, with the quarantine's detail next to the reason.
Decision = Literal[True] | tuple[Literal[False], str, str]


class Filter(Protocol):
    name: str
    counters: Counter

    def filter(self, doc: Doc) -> Decision: ...


@runtime_checkable
class Transform(Protocol):
    name: str
    counters: Counter

    def apply(self, doc: Doc) -> Doc: ...


@runtime_checkable
class BatchFilter(Protocol):
    name: str
    counters: Counter

    def filter(self, doc: Doc) -> Decision: ...

    def filter_batch(self, docs: Sequence[Doc]) -> list[Decision]: ...


Block = Filter | Transform


@dataclass
class Outcome:
    """What steps did to a batch; outcomes of partitions add up (`merge`)."""

    kept: list[Doc] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    # The steps' counters; a step leaves this empty and `run_steps` reads `step.counters`.
    counters: Counter = field(default_factory=Counter)
    # doc id -> MinHash, computed where the document is, for the driver's near-dedup.
    signatures: dict[str, LeanMinHash] = field(default_factory=dict)


class Step(Protocol):
    name: str

    @property
    def counters(self) -> Counter: ...

    def run(self, docs: list[Doc]) -> Outcome: ...


@dataclass(frozen=True)
class Mean:
    """A counter value that adds up across partitions as (total, count) and is read out once:
    a mean of partition means would weigh a small last partition like a full one."""

    total: float = 0.0
    count: int = 0

    def __add__(self, other: Mean | int) -> Mean:
        # Counter.update adds a missing key's value to 0.
        if not isinstance(other, Mean):
            return self
        return Mean(self.total + other.total, self.count + other.count)

    __radd__ = __add__

    def value(self, digits: int = 4) -> float:
        return round(self.total / self.count, digits)


def quarantined(doc: Doc, reason: str, detail: str) -> Rejected:
    # Curation does not know a document's file and line; its id stands in as the origin.
    return Rejected(doc.id, doc.source, doc.id, reason, detail, doc.text, doc.source_id)


class Chain:
    """Filters and transforms, each document through them in order until a filter drops it.

    Runs block by block over the batch (a document's fate is the same as going through the
    blocks one document at a time, as no block looks at another document), so that a
    `BatchFilter` scores all the batch's survivors in one call; the rejected come out in input
    order. The quarantine keeps the text the chain received, not what its transforms made of
    it, so a rejected page can be read as it arrived.
    """

    def __init__(self, blocks: Sequence[Block], name: str = "chain"):
        self.blocks, self.name = list(blocks), name
        # Decided once per block, not per document (a Protocol isinstance check is slow).
        self._kinds = [
            "transform"
            if isinstance(b, Transform)
            else "batch"
            if isinstance(b, BatchFilter)
            else "filter"
            for b in self.blocks
        ]

    @property
    def counters(self) -> Counter:
        total: Counter = Counter()
        for b in self.blocks:
            total.update(b.counters)
        return total

    def run(self, docs: Iterable[Doc]) -> Outcome:
        received = list(docs)
        current = list(enumerate(received))  # (position in the batch, document now)
        rejected: list[tuple[int, Rejected]] = []
        for block, kind in zip(self.blocks, self._kinds, strict=True):
            if kind == "transform":
                current = [(i, block.apply(d)) for i, d in current]
                continue
            batch = [d for _, d in current]
            decisions = (
                block.filter_batch(batch) if kind == "batch" else [block.filter(d) for d in batch]
            )
            survivors = []
            for (i, d), decision in zip(current, decisions, strict=True):
                if decision is True:
                    survivors.append((i, d))
                else:
                    _, reason, detail = decision
                    rejected.append((i, quarantined(received[i], reason, detail)))
            current = survivors
        rejected.sort(key=lambda r: r[0])
        return Outcome(kept=[d for _, d in current], rejected=[r for _, r in rejected])


def run_steps(steps: Sequence[Step], docs: list[Doc]) -> Outcome:
    """The steps in order over one batch; the outcome carries every step's counters."""
    out = Outcome(kept=docs)
    for step in steps:
        done = step.run(out.kept)
        out.kept = done.kept
        out.rejected += done.rejected
        out.signatures.update(done.signatures)
    for step in steps:
        out.counters.update(step.counters)
    return out


def merge(outcomes: Iterable[Outcome]) -> Outcome:
    """Partition outcomes joined in partition order."""
    total = Outcome()
    for o in outcomes:
        total.kept += o.kept
        total.rejected += o.rejected
        total.counters.update(o.counters)
        total.signatures.update(o.signatures)
    return total
