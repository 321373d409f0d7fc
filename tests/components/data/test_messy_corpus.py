"""A held-out messy corpus through the ingest and curate stages: every planted fault is caught
for its own reason, nothing crashes, and every record is accounted for (kept or quarantined)."""

import json
import random

import pyarrow.parquet as pq
import pytest

from components.constants import EVAL_SET_FILES
from components.data import curate, ingest
from components.data.decontam import item_text
from components.data.pii_check import find_pii
from components.tracking.stage_run import stage_run
from tests.helpers import LINE_RULES_OFF, ROOT, project_params, stage_view

REFERENCE = ROOT / "data" / "keeprate" / "clean.jsonl"

SUBJECTS = [
    "The committee",
    "Our neighbour",
    "A young engineer",
    "The old farmer",
    "The museum guide",
    "My sister",
    "The harbour master",
    "A travelling musician",
]
VERBS = [
    "described",
    "repaired",
    "painted",
    "measured",
    "visited",
    "explained",
    "carried",
    "photographed",
]
OBJECTS = [
    "the wooden bridge",
    "a quiet garden",
    "the northern lighthouse",
    "an empty barn",
    "the village library",
    "a broken clock",
    "the river crossing",
    "a stone wall",
]
TAILS = [
    "before the winter storms arrived.",
    "with great care and patience.",
    "while the children watched from the hill.",
    "during the long summer evenings.",
    "as the town prepared for the festival.",
    "after the council approved the plan.",
]
FRENCH = (
    "Le comité publiera son rapport annuel sur l'état des rivières au printemps "
    "prochain, après une longue enquête menée dans tous les villages de la région. "
)
ABUSE = (
    "fuck you, you stupid worthless piece of shit",
    "shut up you fucking idiot",
    "what a stupid bitch, go to hell",
    "you are a dumb shit and a fucking loser",
    "fuck off, nobody wants your crap here",
    "this asshole is a total fucking moron",
)
PII_LINE = (
    "You can reach Jane at jane.doe@postbox.de or on +44 20 7946 0958; pay to IBAN "
    "GB82 WEST 1234 5698 7654 32 or card 4111 1111 1111 1111; the server is 81.2.69.160."
)


def prose(seed: int, paragraphs: int = 6) -> str:
    rng = random.Random(seed)
    return "\n\n".join(
        " ".join(
            f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)} {rng.choice(TAILS)}"
            for _ in range(6)
        )
        for _ in range(paragraphs)
    )


def leaked_item(tasks_dir) -> str:
    rows = [json.loads(line) for line in (tasks_dir / EVAL_SET_FILES[0]).read_text().splitlines()]
    return max((item_text(r) for r in rows), key=lambda t: len(t.split()))


def plant(raw, leak: str):
    web = raw / "web"
    web.mkdir(parents=True)
    for i in range(8):
        (web / f"good_{i}.txt").write_text(prose(i))
    (web / "zz_copy_of_good_0.txt").write_text(prose(0))
    words = prose(1).split(" ")
    words[10], words[60] = "lantern", "orchard"
    (web / "zz_near_copy_of_good_1.txt").write_text(" ".join(words))
    (web / "pii.txt").write_text(prose(100) + "\n\n" + PII_LINE)
    toxic = prose(101).split("\n\n")
    # Distinct lines: repeated ones would be caught first by Gopher's duplicate-line rule.
    lines = [f"{p}\n{a}" for p, a in zip(toxic, ABUSE, strict=True)]
    (web / "toxic.txt").write_text("\n".join(lines))
    (web / "french.html").write_text(
        f"<html><body><article><p>{FRENCH * 4}</p><p>{FRENCH * 3}</p></article></body></html>"
    )
    (web / "leak.txt").write_text(prose(102) + "\n\n" + leak)
    (web / "empty.txt").write_text("  \n\t ")
    (web / "huge.txt").write_text(prose(103, paragraphs=2000))
    (web / "script_only.html").write_text(
        "<html><head><style>p {}</style></head><body><script>track()</script></body></html>"
    )
    # Navigation only: trafilatura (favouring recall) keeps the link text; curation drops it.
    (web / "nav_only.html").write_text(
        "<html><body><nav><a href='/'>Home</a></nav><script>track()</script></body></html>"
    )
    (web / "binary.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe broken")
    lines = [
        json.dumps({"id": "r1", "text": prose(104)}).encode(),
        b'{"id": "r2", "text": "cut',
        json.dumps({"id": "r3", "body": "no text field"}).encode(),
        b'{"id": "r4", "text": "caf\xe9"}',
    ]
    (raw / "feed.jsonl").write_bytes(b"\n".join(lines) + b"\n")


@pytest.fixture(scope="module")
def outcome(tmp_path_factory, tasks_dir):
    tmp = tmp_path_factory.mktemp("messy")
    plant(tmp / "raw", leaked_item(tasks_dir))
    params = project_params(
        ingest={"sources": ("web", "feed"), "max_doc_chars": 200_000},
        curate={"quality_model_keep": None, **LINE_RULES_OFF},
    )
    ingested, curated = tmp / "ingested", tmp / "curated"
    with stage_run("ingest", stage_view("ingest", params)) as tracker:
        ingest_metrics = ingest.run(
            tracker.params, ingest.Paths(tmp / "raw", ingested, tmp / "i.json"), tracker
        ).metrics
    with stage_run("curate", stage_view("curate", params)) as tracker:
        curate_metrics = curate.run(
            tracker.params,
            curate.Paths(ingested, tasks_dir, REFERENCE, curated, tmp / "c.json"),
            tracker,
        ).metrics
    read = lambda path: pq.read_table(path).to_pylist()  # noqa: E731
    return {
        "ingested": read(ingested / "docs.parquet"),
        "ingest_q": read(ingested / "quarantine.parquet"),
        "kept": read(curated / "docs.parquet"),
        "curate_q": read(curated / "quarantine.parquet"),
        "ingest_metrics": ingest_metrics,
        "curate_metrics": curate_metrics,
    }


def by_origin(rows):
    return {r["origin"]: r["reason"] for r in rows}


def test_broken_records_are_quarantined_at_ingest_with_reasons(outcome):
    q = by_origin(outcome["ingest_q"])
    assert q == {
        "web/empty.txt": ingest.EMPTY_TEXT,
        "web/huge.txt": ingest.TOO_LARGE,
        "web/script_only.html": ingest.NO_HTML_TEXT,
        "web/binary.txt": ingest.BAD_ENCODING,
        "feed.jsonl:2": ingest.BAD_JSON,
        "feed.jsonl:3": ingest.MISSING_TEXT,
        "feed.jsonl:4": ingest.BAD_ENCODING,
    }
    assert outcome["ingest_metrics"]["quarantined"] == 7
    assert outcome["ingest_metrics"][f"quarantined.{ingest.TOO_LARGE}"] == 1


def test_every_ingested_document_is_kept_or_quarantined_by_curation(outcome):
    ingested = {d["id"] for d in outcome["ingested"]}
    seen = [
        d["id"].rsplit("-", 1)[0] if d["id"] not in ingested else d["id"]
        for d in outcome["kept"] + outcome["curate_q"]
    ]
    assert set(seen) == ingested
    m = outcome["curate_metrics"]
    assert m["docs_kept"] + m["docs_dropped"] == m["docs_in"]


def test_planted_faults_are_dropped_for_their_own_reason(outcome, tasks_dir):
    source_of = {d["id"]: d["text"] for d in outcome["ingested"]}
    reasons = {}
    for r in outcome["curate_q"]:
        text = source_of.get(r["id"], "")
        reasons[r["reason"]] = reasons.get(r["reason"], []) + [text]
    assert reasons["exact_duplicate"] == [prose(0)]
    assert len(reasons["near_duplicate"]) == 1 and "lantern" in reasons["near_duplicate"][0]
    assert len(reasons["toxic_content"]) == 1 and ABUSE[0] in reasons["toxic_content"][0]
    assert len(reasons["language_not_kept"]) == 1
    assert "Le comité" in reasons["language_not_kept"][0]
    assert len(reasons["eval_contamination"]) == 1
    assert leaked_item(tasks_dir) in reasons["eval_contamination"][0]
    assert reasons["language_score_too_low"] == ["Home"]  # the first block it meets


def test_pii_is_replaced_by_typed_placeholders_in_what_is_kept(outcome):
    kept_text = "\n".join(d["text"] for d in outcome["kept"])
    for placeholder in ("<EMAIL>", "<PHONE>", "<IBAN>", "<CREDIT_CARD>", "<IP_ADDRESS>"):
        assert placeholder in kept_text
    assert not find_pii(kept_text)
    # The eight good documents, the redacted one and the good feed record survive.
    assert len(outcome["kept"]) == 10
