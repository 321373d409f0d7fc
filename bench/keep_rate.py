"""Keep-rate of the refinery on clean text nobody tuned it to, and its catch-rate of planted junk.

The clean documents are `data/keeprate/clean.jsonl` (scripts/build_keeprate.py; five genres,
six sources, each record assigned to the `tuning` or `heldout` split by the file it comes from)
and `data/keeprate/docs_heldout.jsonl` (the standard library's docstrings, a documentation
source held out whole: split `docs_heldout`). Junk is planted per split from that split's own
clean documents and fixed snippets, seeded: exact and lightly edited copies, word salad, spam
and navigation, numeric tables, hashtag soup, lorem ipsum, fragments too short to be documents,
German/French/Spanish pages (whole, or translated around the English page's code), toxic lines.
Each split runs through the refinery (`refine`, with params.yaml's `curate` section and its
per-source rule sets) on its own. Thresholds are tuned on `tuning` only; `heldout` and
`docs_heldout` are the numbers to quote. Per split it also reports the kept documents in which
the post-curation gate's PII checker still finds something (each one stops the pipeline), and
the near-dedup recall on one lightly edited copy of every clean document.

    PYTHONPATH=. python -m bench.keep_rate            # writes bench/results/keep_rate.{json,md}
    PYTHONPATH=. python -m bench.keep_rate --rule-set default --tag keep_rate_web
"""

from __future__ import annotations

import argparse
import json
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from bench.curation import snippets
from components.config import CurateParams, load_params
from components.data.documents import Doc
from components.data.near_dedup import NearDedupFilter
from components.data.pii_check import find_pii
from components.data.quality_model import corrupt
from components.data.refinery import near_dedup_config, quality_fit, refine
from tests.fixtures.planted import BOILERPLATE, edit_words

CLEAN = Path("data/keeprate/clean.jsonl")
DOCS_HELDOUT = Path("data/keeprate/docs_heldout.jsonl")
OUT = Path("bench/results")
SPLITS = ("tuning", "heldout", "docs_heldout")
# The benchmark's sources under params.yaml's rule sets, by kind of text. No web page is on
# disk, so the default (web) set meets only planted junk here.
BENCH_RULE_SETS = {
    "vim_manual": "structured",  # a software manual: hard-wrapped, commands on their own lines
    "python_docstrings": "structured",
    "cmake_help": "structured",
    "nodejs_api": "structured",
    "licences": "structured",
    "shakespeare": "literature",
    "stdlib_docstrings": "structured",
}
JUNK_PER_CLEAN = 0.5
DUPLICATES = ("exact_duplicate", "near_duplicate")
JUNK_KINDS = (
    "exact_duplicate",
    "near_duplicate",
    "word_salad",
    "spam",
    "table",
    "hashtags",
    "lorem",
    "fragment",
    "foreign",
    "foreign_around_code",
    "toxic",
)


def load_clean(*paths: Path) -> list[dict]:
    return [
        json.loads(line)
        for path in paths or (CLEAN, DOCS_HELDOUT)
        for line in path.read_text(encoding="utf-8").splitlines()
    ]


class Planter:
    """Junk made from a split's clean documents, deterministic from the seed."""

    def __init__(self, clean: list[dict], seed: int):
        self.clean, self.rng = clean, np.random.default_rng(seed)
        self.vocab = sorted({w for r in clean for w in r["text"].split()})

    def pick(self) -> dict:
        return self.clean[int(self.rng.integers(len(self.clean)))]

    def make(self, kind: str) -> tuple[str, dict]:
        """(text, the clean record it was made from): junk arrives in that record's source."""
        base = self.pick()
        return getattr(self, kind)(base), base

    def exact_duplicate(self, base: dict) -> str:
        return base["text"]

    def near_duplicate(self, base: dict) -> str:
        """A lightly edited copy: 1-3% of its words edited, or a boilerplate line added. Said in
        edits, not in a shingle Jaccard, so the truth does not follow the rule's own measure."""
        for _ in range(20):
            if self.rng.random() < 0.5:
                rate = float(self.rng.uniform(0.01, 0.03))
                text = " ".join(edit_words(self.rng, base["text"].split(" "), self.vocab, rate))
            else:
                text = f"{base['text']}\n\n{self.rng.choice(BOILERPLATE)}"
            if text != base["text"]:
                return text
        return f"{base['text']}\n\n{BOILERPLATE[0]}"

    def word_salad(self, base: dict) -> str:
        return corrupt(base["text"], self.rng)

    def spam(self, base: dict) -> str:
        lines = list(self.rng.choice(snippets.NAV, size=int(self.rng.integers(5, 12))))
        for _ in range(int(self.rng.integers(20, 60))):
            pool = snippets.SPAM if self.rng.random() < 0.6 else snippets.NAV
            lines.append(str(self.rng.choice(pool)))
        return "\n".join(lines)

    def table(self, base: dict) -> str:
        rows = self.rng.integers(0, 10_000, size=(int(self.rng.integers(40, 120)), 6))
        return "\n".join(" | ".join(f"{v / 100:.2f}" for v in row) for row in rows)

    def hashtags(self, base: dict) -> str:
        tags = self.rng.choice(self.vocab, size=int(self.rng.integers(60, 200)))
        return " ".join(f"#{t}" for t in tags)

    def lorem(self, base: dict) -> str:
        return "\n\n".join([snippets.LOREM] * int(self.rng.integers(3, 8)))

    def fragment(self, base: dict) -> str:
        return " ".join(base["text"].split()[: int(self.rng.integers(3, 25))])

    def foreign(self, base: dict) -> str:
        sentences = snippets.FOREIGN[str(self.rng.choice(sorted(snippets.FOREIGN)))]
        paras = []
        for _ in range(int(self.rng.integers(3, 8))):
            picks = self.rng.choice(len(sentences), size=4, replace=False)
            paras.append(" ".join(sentences[i] for i in picks))
        return "\n\n".join(paras)

    def foreign_around_code(self, base: dict) -> str:
        """The page translated: its prose paragraphs in another language, its code, signatures
        and headings left in English, as a translated manual keeps them."""
        sentences = snippets.FOREIGN[str(self.rng.choice(sorted(snippets.FOREIGN)))]
        paras = []
        for para in base["text"].split("\n\n"):
            lines = para.split("\n")
            if len(para) < 60 or any(_looks_like_code(ln) for ln in lines):
                paras.append(para)
            else:
                picks = self.rng.choice(len(sentences), size=3, replace=False)
                paras.append(" ".join(sentences[i] for i in picks))
        if sum(p in base["text"] for p in paras) == len(paras):  # all code: add prose
            paras.insert(1, " ".join(sentences[:4]))
        return "\n\n".join(paras)

    def toxic(self, base: dict) -> str:
        lines = base["text"].split("\n")
        for _ in range(max(3, len(lines) // 5)):
            at = int(self.rng.integers(len(lines) + 1))
            lines.insert(at, str(self.rng.choice(snippets.TOXIC)))
        return "\n".join(lines)


def _looks_like_code(line: str) -> bool:
    return line.startswith(("    ", "\t", ">>>", "def ", "class ", "$ ", "```"))


def near_dedup_recall(cfg: CurateParams, clean: list[dict], split: str, seed: int) -> dict:
    """The near-dedup rule alone on the split's clean documents followed by one lightly edited
    copy of each: recall is the copies it drops, false alarms the originals it drops."""
    rows = [r for r in clean if r["split"] == split]
    planter = Planter(rows, seed)
    copies = [Doc(f"copy:{r['id']}", planter.near_duplicate(r), r["source"]) for r in rows]
    rule = NearDedupFilter(near_dedup_config(cfg))
    originals = [Doc(r["id"], r["text"], r["source"]) for r in rows]
    false_alarms = sum(rule.filter(d) is not True for d in originals)
    caught = sum(rule.filter(d) is not True for d in copies)
    return {"copies": len(copies), "recall": caught / len(copies), "false_alarms": false_alarms}


def reference_sample(clean: list[dict]) -> list[tuple[str, str]]:
    """The quality model's declared high-quality sample: the tuning split, never held-out."""
    return [(r["id"], r["text"]) for r in clean if r["split"] == "tuning"]


def bench_params(curate: CurateParams, rule_set: str | None = None) -> CurateParams:
    """params.yaml's curate section with the bench's sources mapped to their rule sets, or all
    of them to `rule_set`."""
    rule_sets = {s: rule_set or r for s, r in BENCH_RULE_SETS.items()}
    return CurateParams.model_validate({**curate.model_dump(), "source_rule_set": rule_sets})


def split_corpus(clean: list[dict], split: str, seed: int) -> tuple[list[Doc], dict[str, dict]]:
    """The split's clean documents, then the junk planted from them, each part shuffled (an
    original precedes its copies, as on the web); `truth` says which is which."""
    rows = [r for r in clean if r["split"] == split]
    docs, truth = [], {}
    for r in rows:
        docs.append(Doc(r["id"], r["text"], r["source"], source_id=r["id"]))
        truth[r["id"]] = {"kind": "clean", "source": r["source"], "genre": r["genre"]}
    planter = Planter(rows, seed)
    for i in range(int(len(rows) * JUNK_PER_CLEAN)):
        kind = JUNK_KINDS[i % len(JUNK_KINDS)]
        text, base = planter.make(kind)
        jid = f"junk:{split}:{i}:{kind}"
        docs.append(Doc(jid, text, base["source"], source_id=jid))
        truth[jid] = {"kind": kind, "source": base["source"], "genre": "junk", "of": base["id"]}
    rng = np.random.default_rng(seed)
    n = len(rows)
    order = [*rng.permutation(n), *(n + rng.permutation(len(docs) - n))]
    return [docs[i] for i in order], truth


def score_split(cfg: CurateParams, clean: list[dict], split: str, seed: int) -> dict:
    docs, truth = split_corpus(clean, split, seed)
    kept, rejected, stats = refine(docs, cfg, {}, seed=seed, reference=reference_sample(clean))
    reason = {r.id: r.reason for r in rejected}
    scores = {d.id: d.quality for d in kept}
    clean_ids = [i for i, t in truth.items() if t["kind"] == "clean"]
    junk_ids = [i for i, t in truth.items() if t["kind"] != "clean"]
    by_source: dict[str, Counter] = defaultdict(Counter)
    for i in clean_ids:
        c = by_source[truth[i]["source"]]
        c["clean"] += 1
        if i in reason:
            c["dropped"] += 1
            c[f"by.{reason[i]}"] += 1
    by_kind: dict[str, Counter] = defaultdict(Counter)
    caught = set()
    for i in junk_ids:
        c = by_kind[truth[i]["kind"]]
        c["planted"] += 1
        if i in reason:
            caught.add(i)
            c["caught"] += 1
            c[f"by.{reason[i]}"] += 1
        elif truth[i]["kind"] in DUPLICATES and truth[i]["of"] in reason:
            # Its original was dropped for its own fault: no duplicate is left in the output.
            caught.add(i)
            c["caught"] += 1
            c["by.original_dropped"] += 1
    rules: dict[str, Counter] = defaultdict(Counter)
    for i, why in reason.items():
        rules[why]["clean" if truth[i]["kind"] == "clean" else "junk"] += 1
    quality = {
        src: [q for i, q in scores.items() if truth[i]["source"] == src and q is not None]
        for src in sorted(by_source)
    }
    gate = [d.id for d in kept if find_pii(d.text)]
    return {
        "clean": len(clean_ids),
        "junk": len(junk_ids),
        "pii_gate_flagged": gate,
        "near_dedup": near_dedup_recall(cfg, clean, split, seed),
        "clean_dropped": sum(i in reason for i in clean_ids) / len(clean_ids),
        "junk_caught": len(caught) / len(junk_ids),
        "by_source": {s: dict(c) for s, c in sorted(by_source.items())},
        "by_junk_kind": {k: dict(c) for k, c in sorted(by_kind.items())},
        "by_rule": {r: dict(c) for r, c in sorted(rules.items())},
        "quality_kept_median": {s: float(np.median(q)) if q else None for s, q in quality.items()},
        "quality_scores": {
            s: [d.quality for d in kept if truth[d.id]["source"] == s] for s in sorted(by_source)
        },
        "stats": {k: v for k, v in stats.items() if k.startswith("quality_model.")},
    }


def pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _table(result: dict, key: str, total: str, count: str, head: str) -> list[str]:
    """Rows of `count`/`total` per split for each entry of result[split][key], with the rules
    of the last split (the held-out one read first)."""
    splits = [s for s in SPLITS if s in result]
    names = sorted({n for s in splits for n in result[s][key]})
    lines = [
        f"| {head} | {' | '.join(splits)} | {splits[-1]}, by rule |",
        "|---" * (len(splits) + 2) + "|",
    ]
    for name in names:
        cells = [result[s][key].get(name, {}) for s in splits]
        shown = [f"{c.get(count, 0)}/{c.get(total, 0)}" if c else "-" for c in cells]
        rules = ", ".join(f"{k[3:]} {v}" for k, v in sorted(cells[-1].items()) if k[:3] == "by.")
        lines.append(f"| {name} | {' | '.join(shown)} | {rules or '-'} |")
    return lines


def markdown(result: dict) -> str:
    splits = [s for s in SPLITS if s in result]
    lines = [
        "# Keep-rate benchmark (bench/keep_rate.py)",
        "",
        "| split | clean kept | junk caught | kept docs the PII gate flags | "
        "near-dedup recall (false alarms) |",
        "|---|---|---|---|---|",
    ]
    for s in splits:
        r, nd = result[s], result[s]["near_dedup"]
        lines.append(
            f"| {s} | {pct(1 - r['clean_dropped'])} of {r['clean']} | "
            f"{pct(r['junk_caught'])} of {r['junk']} | {len(r['pii_gate_flagged'])} | "
            f"{nd['recall']:.3f} of {nd['copies']} ({nd['false_alarms']}) |"
        )
    lines += ["", "## Clean documents dropped, per source", ""]
    lines += _table(result, "by_source", "clean", "dropped", "source")
    lines += ["", "## Planted junk caught, per kind", ""]
    lines += _table(result, "by_junk_kind", "planted", "caught", "kind")
    lines += [
        "",
        "## Per rule: documents dropped (clean / junk)",
        "",
        f"| rule | {' | '.join(splits)} |",
        "|---" * (len(splits) + 1) + "|",
    ]
    for rule in sorted({r for s in splits for r in result[s]["by_rule"]}):
        cells = [result[s]["by_rule"].get(rule, {}) for s in splits]
        shown = [f"{c.get('clean', 0)} / {c.get('junk', 0)}" for c in cells]
        lines.append(f"| {rule} | {' | '.join(shown)} |")
    if "quality_model" in result:
        q = result["quality_model"]
        lines += [
            "",
            f"## Quality model: held-out scores per source (threshold {q['threshold']:.3f})",
            "",
            "| source | 5th percentile | median |",
            "|---|---|---|",
        ]
        lines += [f"| {s} | {v['p5']} | {v['p50']} |" for s, v in q["per_source"].items()]
    return "\n".join(lines) + "\n"


def plot_quality(cfg: CurateParams, clean: list[dict], seed: int, path: Path) -> dict:
    """The quality model's score distribution per source on the held-out clean documents and
    on held-out word salad, with the threshold; returns the per-source quantiles plotted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    model, _ = quality_fit(cfg, seed, reference_sample(clean))
    held = [r for r in clean if r["split"] == "heldout"]
    rng = np.random.default_rng(seed)
    groups: dict[str, list[str]] = defaultdict(list)
    for r in held:
        groups[r["source"]].append(r["text"])
    groups["word salad (junk)"] = [corrupt(r["text"], rng) for r in held]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    bins = np.linspace(0, 1, 41)
    quantiles = {}
    for name, texts in sorted(groups.items()):
        scores = model.score([f"plot:{name}:{i}" for i in range(len(texts))], texts)
        quantiles[name] = {f"p{q}": round(float(np.percentile(scores, q)), 3) for q in (5, 50)}
        ax.hist(scores, bins=bins, histtype="step", linewidth=1.5, label=name, density=True)
    ax.axvline(model.threshold, color="k", linestyle="--", label=f"threshold {model.threshold:.2f}")
    ax.set_xlabel("quality score (held-out documents)")
    ax.set_ylabel("density")
    ax.set_title("Quality model scores per source, held-out split")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, metadata={"Software": None})  # no version stamp: same input, same bytes
    plt.close(fig)
    return {"threshold": model.threshold, "per_source": quantiles}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--tag", default="keep_rate", help="output file stem")
    ap.add_argument("--rule-set", help="one rule set for every source (default: per source)")
    args = ap.parse_args()
    params = load_params(args.params)
    clean = load_clean()
    cfg = bench_params(params.curate, args.rule_set)
    result = {s: score_split(cfg, clean, s, params.seed) for s in SPLITS}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.quality_model_keep is not None:
        result["quality_model"] = plot_quality(cfg, clean, params.seed, out / f"{args.tag}.png")
    (out / f"{args.tag}.json").write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    (out / f"{args.tag}.md").write_text(markdown(result))
    if "quality_model" in result:
        (out / f"{args.tag}.md").write_text(markdown(result) + f"\n![scores]({args.tag}.png)\n")
    print(markdown(result))


if __name__ == "__main__":
    main()
