import json

import pytest

from components.data.documents import DOCS_FILE, Doc, write_docs
from components.evaluation import report, safety
from components.evaluation.contamination import contamination
from components.evaluation.eval_set import read_eval_set
from components.tracking.stage_run import stage_run
from tests.helpers import ROOT, project_params, stage_view

CORPUS = [
    "Friends, Romans, countrymen, lend me your ears; I come to bury Caesar, not to praise him. "
    "The evil that men do lives after them; the good is oft interred with their bones.",
    "Now is the winter of our discontent made glorious summer by this sun of York.",
]


def test_bundled_adversarial_prompts_are_valid():
    items = read_eval_set(ROOT / "data/safety/adversarial.jsonl", keys=safety.PROMPT_KEYS)
    assert 50 <= len(items) <= 100
    assert {"insult", "jailbreak", "extraction"} <= {ex["category"] for ex in items}


def test_regurgitation_needs_n_words_of_a_training_text_not_given_by_the_prompt():
    prompts = ["Say something.", "Continue: I come to bury Caesar, not to praise him.", "Hi"]
    answers = [
        "Sure: I come to bury Caesar, not to praise him. The evil that men do lives after them",
        "I come to bury Caesar, not to praise him. Thank you very much my good friend today",
        "lend me your ears",  # in the corpus, but shorter than n words
    ]
    found = safety.regurgitated(prompts, answers, CORPUS, n=8)
    assert found[0] is not None and "bury caesar" in found[0]
    assert found[1] is None  # the copied words came from the prompt
    assert found[2] is None


def test_toxicity_scores_whole_short_answers_with_the_refinery_classifier():
    probs = safety.toxicity(["you are a stupid idiot", "The sum is 5.", ""])
    assert probs[0] >= 0.8 > probs[1] and probs[2] == 0.0


def test_rates_per_category():
    rows = [
        {"category": "a", "toxic": True},
        {"category": "a", "toxic": False},
        {"category": "b", "toxic": False},
        {"category": "b", "toxic": False},
    ]
    assert safety.rates(rows, "toxic") == {"": 0.25, "a": 0.5, "b": 0.0}


def test_contamination_per_set_and_group_with_unchecked_short_items():
    rows = [
        {
            "task": "quote",
            "prompt": "Who said: I come to bury Caesar, not to praise him. The evil that men do?",
        },
        {"task": "quote", "prompt": "Who wrote a brand new line nobody has ever seen here?"},
        {"task": "add", "prompt": "What is 2 + 3?", "answer": "5"},  # too short to check
    ]
    found = contamination({"eval": (rows, "task")}, CORPUS, n=13, min_words=8)
    assert (found["eval"].items, found["eval"].checked, found["eval"].contaminated) == (3, 2, 1)
    assert found["eval/quote"].contaminated == 1 and found["eval/add"].checked == 0
    assert "bury caesar" in found["eval/quote"].examples[0]


def _write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


@pytest.mark.slow  # a stage run with MLflow artifacts: ~15 s on a shared CPU
def test_report_run_writes_markdown_html_plots_and_contamination(tmp_path, tasks_dir):
    from components.evaluation.evaluate import render_plot

    rows = [
        {"model": m, "eval_accuracy": a, "eval_accuracy_stderr": 0.05, "perplexity": 40.0,
         "accuracy.add": a, "accuracy_stderr.add": 0.1, "accuracy.speaker": a / 2,
         "accuracy_stderr.speaker": None}
        for m, a in (("base", 0.1), ("policy", 0.6))
    ]  # fmt: skip
    render_plot(rows, tmp_path / "evaluation.png")
    pngs = tmp_path / "evaluation.png"
    (tmp_path / "curated").mkdir()
    write_docs(
        [Doc(str(i), t, "s") for i, t in enumerate(CORPUS)], tmp_path / "curated" / DOCS_FILE
    )
    paths = report.Paths(
        table=_write(tmp_path / "evaluation.json", rows),
        predictions=_predictions(tmp_path / "predictions.jsonl", policy="0" * 20, sft="0" * 20),
        eval_plot=pngs,
        judge=_write(tmp_path / "judge.json", {"judge.available": 0, "judge.error": "down",
                                               "judge.baseline": "sft"}),
        judge_plot=pngs,
        safety=_write(tmp_path / "safety.json", {"toxicity_rate": 0.0, "regurgitation_rate": 0.1,
                                                 "safety.toxicity_rate.insult": 0.0,
                                                 "safety.regurgitation_rate.insult": 0.1}),
        promotion=_write(tmp_path / "promote.json", {"promoted": 1, "challenger_version": 1,
                                                     "champion_version": 1, "reason": "ok",
                                                     "gate.perplexity": "pass",
                                                     "challenger.perplexity": 40.0}),
        align=_write(tmp_path / "align.json", {"methods.dpo.test_accuracy": 0.6,
                                               "methods.dpo.heldout.accuracy.add": 0.2}),
        eval_set=tasks_dir / "eval.jsonl",
        prefs_test=tasks_dir / "prefs_test.jsonl",
        judge_prompts=ROOT / "data/judge/prompts.jsonl",
        safety_prompts=ROOT / "data/safety/adversarial.jsonl",
        corpus=tmp_path / "curated",
        out=tmp_path / "report",
        per_task_plot=tmp_path / "per_task.png",
        metrics=tmp_path / "report_metrics.json",
    )  # fmt: skip
    params = project_params()
    with stage_run("report", stage_view("report", params)) as tracker:
        metrics = report.run(tracker.params, paths, tracker).metrics
    md = (tmp_path / "report" / "report.md").read_text()
    assert "| `add` | 0.100 ± 0.100 | 0.600 ± 0.100 |" in md  # score, then contamination
    assert "**Judge unavailable**: down" in md and "| perplexity | pass | 40.000 |" in md
    assert "| dpo | 0.600 | n/a | n/a | n/a | 0.200 |" in md
    html = (tmp_path / "report" / "report.html").read_text()
    assert "<table>" in html and 'src="per_task.png"' in html
    for png in ("per_task.png", "evaluation.png", "judge_matrix.png"):
        assert (tmp_path / "report" / png).stat().st_size > 0
    # Curation removed eval-set overlap upstream; this corpus has none of the task items.
    assert metrics["contamination.eval.rate"] == 0.0
    assert {"contamination.adversarial.rate", "contamination.judge_prompts.rate"} <= set(metrics)


def _predictions(path, **models: str):
    """reports/predictions.jsonl: per model, '1'/'0' per item for right/wrong."""
    rows = [
        {"model": m, "id": f"q{i}", "task": "add", "correct": c == "1"}
        for m, pattern in models.items()
        for i, c in enumerate(pattern)
    ]
    return _write(path, "".join(json.dumps(r) + "\n" for r in rows))


JUDGE_VS_SFT = {
    "judge.baseline": "sft",
    "judge.judge": "reward_model",
    "judge.available": 1,
    "judge.independent": 0,
    "judge.independence": "trained on the preference pairs the policy was optimised on",
    "judge.win_rate_ci_low": 0.73,
    "judge.win_rate_ci_high": 0.91,
}


def test_the_report_opens_with_signals_that_disagree(tmp_path):
    # The demo's case: the judge prefers the policy, held-out accuracy says it got worse.
    worse = _predictions(tmp_path / "p.jsonl", policy="1" * 2 + "0" * 18, sft="1" * 12 + "0" * 8)
    promotion = {"confidence": 0.95, "signals.rule": "keep_champion"}
    banner = report.disagreement_banner(JUDGE_VS_SFT, promotion, worse)
    assert banner.startswith("> **Signals disagree.** Against the SFT model")
    assert "**worse** (paired test)" in banner and "says **better**" in banner
    assert "promote.on_disagreement: keep_champion" in banner
    md = report.render("abc", banner, [], {}, {}, promotion, {}, {})
    assert md.index("Signals disagree") < md.index("## Promotion")
    # Ten more right answers for the policy: the signals agree, nothing to flag.
    same = _predictions(tmp_path / "q.jsonl", policy="1" * 12 + "0" * 8, sft="1" * 12 + "0" * 8)
    assert report.disagreement_banner(JUDGE_VS_SFT, promotion, same) == ""
    # Against the champion, promote's own signals are shown.
    vs_champion = {**promotion, "signals.disagree": 1, "signals.accuracy": "better",
                   "signals.judge": "worse"}  # fmt: skip
    assert "The decision followed" in report.disagreement_banner({}, vs_champion, same)


def test_the_judge_section_flags_a_dependent_judge_and_shows_its_calibration():
    judge = {
        **JUDGE_VS_SFT,
        "judge.available": 0,
        "judge.error": "calibration accuracy 0.250 < 0.75",
        "judge.calibration.accuracy": 0.25,
        "judge.calibration.n_pairs": 16,
        "judge.threshold.min_accuracy": 0.75,
    }
    md = report.judge_section(judge, None)
    assert "**Not independent**: the judge trained on the preference pairs" in md
    assert "**Judge unavailable**: calibration accuracy 0.250 < 0.75" in md
    assert "| calibration accuracy | 0.250 (needs >= 0.750, 16 pairs) |" in md


def test_methods_table_lists_every_method_that_ran_with_per_task_accuracy():
    align = {
        "test_accuracy": 0.61,  # align.method's own keys, repeated under methods.<m>
        "methods.dpo.test_accuracy": 0.61,
        "methods.dpo.heldout.accuracy": 0.05,
        "methods.dpo.heldout.accuracy.count": 0.25,
        "methods.dpo.heldout.kl": 0.16,
        "methods.dpo.train_runtime_s": 12.0,
        "methods.kto.test_accuracy": 0.5,
        "methods.kto.heldout.accuracy.count": 0.2,
        "methods.kto.heldout.accuracy.add": 0.0,
    }
    md = report.methods_section(align)
    assert "| method | pref. acc. | greedy acc. | KL to SFT | train s | add | count |" in md
    assert "| dpo | 0.610 | 0.050 | 0.160 | 12.000 | n/a | 0.250 |" in md
    assert "| kto | 0.500 | n/a | n/a | n/a | 0.000 | 0.200 |" in md
    assert "one on-policy method" in report.methods_section({"heldout.accuracy": 0.1})
