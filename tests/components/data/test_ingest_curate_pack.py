import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from components.data.curate import split_long
from components.data.documents import Doc
from components.data.filters import EXACT_DUPLICATE, TOO_FEW_WORDS
from components.data.ingest import (
    BAD_ENCODING,
    BAD_JSON,
    EMPTY_TEXT,
    MISSING_TEXT,
    NO_HTML_TEXT,
    UNKNOWN_SOURCE,
    ingest,
)
from components.data.pack import is_validation, pack_tokens
from components.data.refinery import refine
from tests.helpers import TOY_CURATE, project_params, stage_view

ARTICLE = (
    "<html><body><nav>Home | About</nav><article><h1>Title</h1><p>"
    + ("Real paragraph text about interesting things. " * 20)
    + "</p></article></body></html>"
)


def make_raw(tmp_path):
    raw = tmp_path / "raw"
    (raw / "books").mkdir(parents=True)
    (raw / "books" / "a.txt").write_text("Cafe\u0301 au lait, a story.\r\nSecond line.")
    (raw / "books" / "bad.txt").write_bytes(b"\xff\xfe not utf-8 \xc3")
    (raw / "books" / "page.html").write_text(ARTICLE)
    (raw / "books" / "empty.html").write_text("<html><body><script>x()</script></body></html>")
    (raw / "other").mkdir()
    (raw / "other" / "x.txt").write_text("not an allowed source")
    lines = [
        json.dumps({"id": "p1", "text": "a record"}),
        '{"id": "p2", "text": "trunc',
        json.dumps({"id": "p3"}),
        json.dumps({"id": "p4", "text": "   "}),
    ]
    (raw / "feed.jsonl").write_text("\n".join(lines) + "\n")
    return raw


def test_ingest_quarantines_every_bad_record_with_a_reason(tmp_path):
    docs, rejected = ingest(make_raw(tmp_path), ("books", "feed"), "NFC")
    reasons = sorted(r.reason for r in rejected)
    assert reasons == sorted(
        [BAD_ENCODING, NO_HTML_TEXT, UNKNOWN_SOURCE, BAD_JSON, MISSING_TEXT, EMPTY_TEXT]
    )
    texts = {d.source: [] for d in docs}
    for d in docs:
        texts[d.source].append(d.text)
    assert "Café au lait, a story.\nSecond line." in texts["books"]  # NFC + newlines
    assert any("Real paragraph text" in t and "Home | About" not in t for t in texts["books"])
    assert texts["feed"] == ["a record"]
    assert len({d.id for d in docs}) == len(docs)


def test_ingest_ids_are_stable(tmp_path):
    raw = make_raw(tmp_path)
    a, _ = ingest(raw, ("books", "feed"), "NFC")
    b, _ = ingest(raw, ("books", "feed"), "NFC")
    assert [d.id for d in a] == [d.id for d in b]


def test_split_long_keeps_all_text():
    text = "\n\n".join(f"paragraph {i} " * 20 for i in range(30))
    parts = split_long(Doc("x", text, "s"), max_chars=1000)
    assert len(parts) > 1
    assert "\n\n".join(p.text for p in parts) == text
    assert len({p.id for p in parts}) == len(parts)
    assert max(len(p.text) for p in parts) <= 1000


def test_split_long_cuts_huge_paragraphs_and_lines_within_the_limit():
    lines = "\n".join(f"line {i} " * 30 for i in range(40))  # one paragraph, 40 lines
    text = f"intro\n\n{lines}\n\n{'x' * 2500}"  # and one 2,500-char line
    parts = split_long(Doc("x", text, "s"), max_chars=1000)
    assert max(len(p.text) for p in parts) <= 1000
    # Nothing lost or reordered: the pieces' characters are the original's, minus separators.
    strip = lambda t: t.replace("\n", "")  # noqa: E731
    assert "".join(strip(p.text) for p in parts) == strip(text)


def test_curate_counts_and_quarantines():
    toy = {**TOY_CURATE, "min_words": 5, "quality_model_keep": None}
    params = project_params(curate=toy)
    good = "one two three four five six seven"
    docs = [Doc("1", good, "s"), Doc("2", good.upper(), "s"), Doc("3", "tiny", "s")]
    kept, rejected, stats = refine(docs, params.curate, {})
    assert [d.id for d in kept] == ["1"]
    dropped = {k: n for k, n in stats.items() if k.startswith("dropped.")}
    assert dropped == {f"dropped.{EXACT_DUPLICATE}": 1, f"dropped.{TOO_FEW_WORDS}": 1}
    assert {r.id for r in rejected} == {"2", "3"}
    assert all(r.reason and r.detail and r.text for r in rejected)


def test_pack_tokens_joins_with_eos_and_drops_tail():
    arr = pack_tokens([[1, 2, 3], [4, 5]], eos_id=0, seq_len=3)
    assert arr.tolist() == [[1, 2, 3], [0, 4, 5]]  # the final EOS is the dropped tail
    assert arr.dtype == np.uint16


def test_validation_split_is_deterministic_and_roughly_sized():
    ids = [f"doc{i}" for i in range(2000)]
    val = [i for i in ids if is_validation(i, 0.1, seed=1)]
    assert val == [i for i in ids if is_validation(i, 0.1, seed=1)]
    assert 120 < len(val) < 280


def test_quarantine_written_by_ingest_run(tmp_path, monkeypatch):
    from components.data import ingest as ingest_stage
    from components.tracking.stage_run import stage_run

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    raw = make_raw(tmp_path)
    params = project_params(ingest={"sources": ("books", "feed")})
    paths = ingest_stage.Paths(raw=raw, out=tmp_path / "out", metrics=tmp_path / "m.json")
    with stage_run("ingest", stage_view("ingest", params)) as tracker:
        result = ingest_stage.run(tracker.params, paths, tracker)
    q = pq.read_table(tmp_path / "out" / "quarantine.parquet").to_pylist()
    assert result.metrics["quarantined"] == len(q) == 6
    assert result.metrics[f"quarantined.{BAD_JSON}"] == 1
    empty = next(r for r in q if r["reason"] == EMPTY_TEXT)
    assert empty["origin"] == "feed.jsonl:4"


def test_html_extraction_drops_navigation_and_footer_keeps_code_blocks_as_text():
    from components.data.ingest import extract_html

    html = (
        "<html><body><nav><a href='/'>Home</a> | <a href='/docs'>Docs</a></nav>"
        "<header>Site header</header><article><h1>Lists</h1><p>Lists are mutable "
        "sequences, typically used to store collections of items, built in several "
        "ways.</p><pre><code>squares = []\nfor x in range(10):\n    squares.append(x**2)"
        "</code></pre><p>The example above builds a list of squares with a loop.</p>"
        "</article><footer>Copyright 2026. Privacy policy.</footer></body></html>"
    )
    text = extract_html(html)
    assert "for x in range(10):\n    squares.append(x**2)" in text  # indentation kept
    assert "```" not in text  # no markdown fences
    for boilerplate in ("Home", "Site header", "Copyright"):
        assert boilerplate not in text


def run_ingest(tmp_path, monkeypatch, raw, **ingest_params):
    from components.data import ingest as ingest_stage
    from components.tracking.stage_run import stage_run

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    params = project_params(ingest={"sources": ("feed",), **ingest_params})
    paths = ingest_stage.Paths(raw=raw, out=tmp_path / "out", metrics=tmp_path / "m.json")
    with stage_run("ingest", stage_view("ingest", params)) as tracker:
        return ingest_stage.run(tracker.params, paths, tracker)


def test_a_file_that_is_not_jsonl_fails_naming_the_reason_and_the_quarantine(tmp_path, monkeypatch):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "feed.jsonl").write_text("Just prose,\nnot JSON at all.\nThird line.\n")
    with pytest.raises(ValueError, match=r"bad_json: 3 \(e\.g\. feed\.jsonl:1") as err:
        run_ingest(tmp_path, monkeypatch, raw)
    quarantine = tmp_path / "out" / "quarantine.parquet"
    assert str(quarantine) in str(err.value)
    rows = pq.read_table(quarantine).to_pylist()
    assert [r["source_id"] for r in rows] == ["feed.jsonl:1", "feed.jsonl:2", "feed.jsonl:3"]


def test_a_single_oversized_record_fails_with_too_large(tmp_path, monkeypatch):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "feed.jsonl").write_text(json.dumps({"id": "huge-1", "text": "x " * 5000}) + "\n")
    with pytest.raises(ValueError, match=r"too_large: 1 .*> ingest\.max_doc_chars 1,000"):
        run_ingest(tmp_path, monkeypatch, raw, max_doc_chars=1000)
    rows = pq.read_table(tmp_path / "out" / "quarantine.parquet").to_pylist()
    assert [(r["reason"], r["source_id"]) for r in rows] == [("too_large", "huge-1")]


def test_source_id_is_the_records_own_id_else_file_and_line(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    lines = [
        json.dumps({"id": "user-7", "text": "a record with an id"}),
        json.dumps({"text": "a record without one"}),
        json.dumps({"id": 42, "text": "   "}),
    ]
    (raw / "feed.jsonl").write_text("\n".join(lines) + "\n")
    (raw / "books").mkdir()
    (raw / "books" / "a.txt").write_text("a text file")
    docs, rejected = ingest(raw, ("feed", "books"), "NFC")
    assert sorted(d.source_id for d in docs) == ["books/a.txt", "feed.jsonl:2", "user-7"]
    assert [(r.reason, r.source_id) for r in rejected] == [(EMPTY_TEXT, "42")]
    # Chunks of a long document keep it; so do the curation quarantine's records.
    chunks = split_long(Doc("d", "word " * 100, "feed", source_id="user-7"), 100)
    assert len(chunks) > 1 and {c.source_id for c in chunks} == {"user-7"}
    toy = {**TOY_CURATE, "quality_model_keep": None}
    _, dropped, _ = refine(chunks, project_params(curate=toy).curate, {})
    assert dropped and {r.source_id for r in dropped} == {"user-7"}


def test_packed_document_spans_carry_source_ids():
    from components.data.pack import document_spans

    docs = [Doc("a", "x", "s", source_id="user-1"), Doc("b", "y", "s", source_id="f.jsonl:2")]
    rows = document_spans(docs, [[1, 2, 3], [4]], "train")
    assert [(r["source_id"], r["token_start"], r["tokens"]) for r in rows] == [
        ("user-1", 0, 3),
        ("f.jsonl:2", 4, 1),  # after the first document's 3 tokens and its EOS
    ]
