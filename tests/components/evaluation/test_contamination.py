"""Curation's decontamination and evaluation's contamination report answer the same question
with the same index: a document curation drops for an eval item is one the report finds that
item in, and a document it keeps is one the report finds nothing in."""

import pytest

from components.data.decontam import DecontaminationFilter, item_text
from components.data.documents import Doc
from components.evaluation.contamination import contamination

ROWS = [
    {  # 20 words: looked for by its 13-grams
        "prompt": "Who says the following line in the play about the two lovers from Verona?",
        "answer": "Proteus, in the second act",
    },
    {"prompt": "Compute the sum of twenty two and forty.", "answer": "62"},  # 9 words: whole
    {"prompt": "What is 2 + 2?", "answer": "4"},  # 5 words: too short to be looked for
]
FILLER = " ".join(f"filler{i}" for i in range(40))
DOCS = {
    "long item, recased and repunctuated": f"{FILLER} {item_text(ROWS[0]).upper()}! {FILLER}",
    "12 words of the long item": " ".join(item_text(ROWS[0]).split()[:12]),
    "short item at the end": f"{FILLER} compute the sum of twenty-two and forty 62",
    "short item, one word missing": f"{FILLER} compute the sum of twenty two and 62",
    "tiny item": f"{FILLER} what is 2 + 2? 4 {FILLER}",
    "clean": FILLER,
}


@pytest.mark.parametrize("doc", DOCS)
def test_curation_drops_exactly_the_documents_the_report_finds_items_in(doc):
    text = DOCS[doc]
    found = contamination({"eval": (ROWS, None)}, [text], n=13, min_words=8)["eval"]
    per_item = [
        DecontaminationFilter({"eval.jsonl": [item_text(row)]}).filter(Doc("d", text, "web"))
        for row in ROWS
    ]
    dropped = sum(decision is not True for decision in per_item)
    assert found.contaminated == dropped
    assert (dropped > 0) == (
        doc in {"long item, recased and repunctuated", "short item at the end"}
    )
    assert found.checked == 2  # the tiny item is neither looked for nor dropped for
