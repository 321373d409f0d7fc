"""The refinery's runner: blocks in chains, counters from the blocks, phases as data."""

import pickle
from collections import Counter
from dataclasses import replace
from functools import partial

from components.data import refinery
from components.data.blocks import Chain, Decision, Mean, run_steps
from components.data.decontam import EVAL_CONTAMINATION, DecontaminationFilter
from components.data.documents import Doc, Rejected
from components.data.langid import WRONG_LANGUAGE
from components.data.pii import PiiRedactor
from components.data.refinery import (
    Corpus,
    Fit,
    Map,
    Sequential,
    judge_blocks,
    judge_steps,
    map_partition,
    phases,
    refine,
    statistics,
)
from tests.helpers import TOY_CURATE, project_params

SPAM = "spam"
EN = "The committee will publish its annual report on the state of the rivers next spring. " * 3
FR = "Le comité publiera son rapport annuel sur l'état des rivières au printemps prochain. " * 3
LEAK = "who says the following line in the play about the two lovers from verona who quarrel"


class SpamFilter:
    """A toy filter that counts what it saw under its own prefix."""

    name = "spam"

    def __init__(self) -> None:
        self.counters: Counter = Counter()

    def filter(self, doc: Doc) -> Decision:
        self.counters["spam.seen"] += 1
        text = doc.text.lower()
        if SPAM in text:
            return False, SPAM, f"'{SPAM}' at {text.index(SPAM)}"
        return True


class Shout:
    name = "shout"

    def __init__(self) -> None:
        self.counters: Counter = Counter()

    def apply(self, doc: Doc) -> Doc:
        return replace(doc, text=doc.text.upper())


def docs(*texts: str) -> list[Doc]:
    return [Doc(str(i), t, "s") for i, t in enumerate(texts)]


def test_a_chain_reports_each_blocks_own_counters():
    spam, pii = SpamFilter(), PiiRedactor()
    decontam = DecontaminationFilter({"eval.jsonl": [LEAK]})
    out = run_steps(
        [Chain([pii, spam, decontam])], docs("mail a@b.org", "spam here", f"{LEAK} again")
    )
    assert out.counters == spam.counters + pii.counters + decontam.counters
    assert out.counters == {
        "spam.seen": 3,
        "pii.EMAIL": 1,
        "pii.docs_redacted": 1,
        "contaminated_docs.eval.jsonl": 1,
    }
    assert [(r.id, r.reason, r.detail) for r in out.rejected] == [
        ("1", SPAM, "'spam' at 0"),
        ("2", EVAL_CONTAMINATION, "eval.jsonl: 4 matching n-grams"),
    ]


def test_quarantine_keeps_the_text_the_chain_received():
    out = Chain([Shout(), SpamFilter()]).run(docs("spam", "fine"))
    assert out.rejected == [Rejected("0", "s", "0", SPAM, "'spam' at 0", "spam")]
    assert [d.text for d in out.kept] == ["FINE"]


def spam_steps(model: object) -> list:
    return [Chain([SpamFilter()])]


def test_the_phase_list_is_what_runs(monkeypatch):
    shouted = Sequential("shout", lambda signatures: [Chain([Shout()])])
    fitted = Fit("count", lambda: (None, Counter({"fit.ran": 1})))
    toy = [Map("spam", spam_steps, docs_per_partition=2), fitted, shouted]
    monkeypatch.setattr(refinery, "phases", lambda cfg, eval_sets, seed, reference: toy)
    kept, rejected, stats = refine(docs("a", "spam", "b", "c", "spam"), project_params().curate, {})
    assert [d.text for d in kept] == ["A", "B", "C"]
    assert [r.id for r in rejected] == ["1", "4"]
    # Three partitions, each with fresh blocks: their counters add up to the corpus's.
    assert stats == {"dropped.spam": 2, "fit.ran": 1, "spam.seen": 5}


def test_the_refinery_is_judge_fit_polish_dedup():
    cfg = project_params().curate
    described = [(type(p).__name__, p.name) for p in phases(cfg, {}, seed=0)]
    assert described == [
        ("Map", "judge"),
        ("Fit", "quality_model"),
        ("Map", "polish"),
        ("Sequential", "dedup"),
    ]


def test_map_phases_pickle_for_the_workers():
    cfg = project_params().curate
    for phase in phases(cfg, {"eval.jsonl": [LEAK]}, seed=0):
        if isinstance(phase, Map):
            pickle.dumps(partial(map_partition, phase.steps, None))


def test_language_tag_is_a_transform_right_after_the_language_filter():
    cfg = project_params(curate={**TOY_CURATE, "languages": ("en",)}).curate
    assert [b.name for b in judge_blocks(cfg)][:2] == ["language_id", "language_tag"]
    no_lid = project_params(curate=TOY_CURATE).curate
    assert not {"language_id", "language_tag"} & {b.name for b in judge_blocks(no_lid)}
    out = run_steps([Chain(judge_blocks(cfg))], docs(EN, FR))
    assert [(d.id, d.lang) for d in out.kept] == [("0", "en")]
    assert out.rejected[0].reason == WRONG_LANGUAGE
    assert out.rejected[0].detail.startswith("fr (")


def test_a_mean_adds_up_across_partitions():
    total: Counter = Counter({"other": 1})
    for part in (Mean(3.0, 2), Mean(1.0, 2)):
        total.update({"score": part})
    assert total["score"] == Mean(4.0, 4) and total["score"].value() == 1.0


def test_statistics_are_reasons_and_counters_assembled_once():
    corpus = Corpus(
        docs=[],
        rejected=[Rejected("1", "s", "1", SPAM, "", ""), Rejected("2", "s", "2", SPAM, "", "")],
        counters=Counter({"pii.EMAIL": 3, "quality_model.mean_score": Mean(1.0, 3)}),
    )
    assert statistics(corpus) == {
        "dropped.spam": 2,
        "pii.EMAIL": 3,
        "quality_model.mean_score": 0.3333,
    }


def test_every_block_reports_its_counters_even_when_no_document_reaches_it():
    cfg = project_params(curate={**TOY_CURATE, "min_words": 100}).curate
    _, rejected, stats = refine(docs("too short"), cfg, {"eval.jsonl": [LEAK]})
    assert len(rejected) == 1
    assert stats["pii.docs_redacted"] == 0 and stats["contaminated_docs.eval.jsonl"] == 0


def test_each_source_is_judged_by_its_rule_set_and_the_quarantine_names_it():
    strict = {**TOY_CURATE, "min_words": 10}
    sets = {"lenient": {"min_words": 1}}
    cfg = project_params(
        curate={**strict, "rule_sets": sets, "source_rule_set": {"docs": "lenient"}}
    ).curate
    six = "This line has six words here."
    batch = [Doc("w", six, "web"), Doc("d", six, "docs"), Doc("x", six, "web")]
    out = run_steps(judge_steps(cfg, None), batch)
    assert [d.id for d in out.kept] == ["d"]
    assert [(r.id, r.rule_set) for r in out.rejected] == [("w", "default"), ("x", "default")]
    lenient_only = project_params(
        curate={
            **strict,
            "rule_sets": sets,
            "source_rule_set": {"docs": "lenient", "web": "lenient"},
        }
    ).curate
    assert len(run_steps(judge_steps(lenient_only, None), batch).kept) == 3


def test_a_rule_set_sets_its_sources_quality_threshold():
    from components.data.quality_model import QualityModel

    sets = {"docs": {"quality_model_keep": 0.9}, "lenient": {"min_words": 1}}
    cfg = project_params(
        curate={
            **TOY_CURATE,
            "rule_sets": sets,
            "source_rule_set": {"pydoc": "docs", "forum": "lenient"},
        }
    ).curate
    model = QualityModel((), threshold=0.5, reference_scores=tuple(i / 100 for i in range(100)))
    # Only a set that names its own keep gets a threshold of its own.
    assert refinery.quality_thresholds(cfg, model) == {"pydoc": 0.09}
