from components.data.documents import Doc
from components.data.langid import (
    LOW_LANGUAGE_SCORE,
    WRONG_LANGUAGE,
    LanguageFilter,
    LanguageTagger,
    identify,
    judge,
    prose_paragraphs,
)
from components.data.toxicity import TOXIC, ToxicityFilter

EN = "The committee will publish its annual report on the state of the rivers next spring. " * 3
FR = "Le comité publiera son rapport annuel sur l'état des rivières au printemps prochain. " * 3
DE = "Der Ausschuss wird im nächsten Frühjahr seinen Jahresbericht über die Flüsse vorlegen. " * 3


def test_identify_real_languages_offline():
    assert identify(EN)[0] == "en" and identify(FR)[0] == "fr" and identify(DE)[0] == "de"
    assert identify("   ") == ("und", 0.0)


def test_language_filter_keeps_configured_languages():
    f = LanguageFilter(("en", "fr"), min_score=0.5)
    assert f.filter(Doc("en", EN, "s")) is True
    assert f.filter(Doc("fr", FR, "s")) is True
    ok, reason, detail = f.filter(Doc("de", DE, "s"))
    assert (ok, reason) == (False, WRONG_LANGUAGE) and detail.startswith("de (")


def test_language_tagger_is_a_transform_that_sets_lang():
    tagger = LanguageTagger()
    tagged = tagger.apply(Doc("fr", FR, "s", quality=0.5))
    assert (tagged.lang, tagged.text, tagged.quality) == ("fr", FR, 0.5)


def test_language_score_threshold():
    f = LanguageFilter(("en",), min_score=0.999999)
    lang, score = identify("ok so yes no maybe")
    assert f.filter(Doc("x", "ok so yes no maybe", "s")) == (
        False,
        LOW_LANGUAGE_SCORE,
        f"{lang} ({score:.2f})",
    )


def test_toxicity_drops_mostly_abusive_text_keeps_an_occasional_insult():
    clean = [f"The river report covers section {i} of the survey in detail." for i in range(40)]
    abusive = ["fuck you, you stupid piece of shit"] * 10 + clean[:10]
    one_insult = [*clean, "you stupid piece of shit"]
    f = ToxicityFilter(line_threshold=0.8, max_toxic_line_fraction=0.05)
    assert f.filter(Doc("a", "\n".join(abusive), "s")) == (
        False,
        TOXIC,
        "50.0% of lines scored toxic ≥ 0.8",
    )
    assert f.filter(Doc("b", "\n".join(one_insult), "s")) is True
    assert f.filter(Doc("c", "\n".join(clean), "s")) is True
    assert (
        ToxicityFilter(max_toxic_line_fraction=None).filter(Doc("a", "\n".join(abusive), "s"))
        is True
    )


def test_toxicity_batch_decides_as_one_by_one():
    from components.data.blocks import Chain

    tox = ToxicityFilter(0.8, 0.05)
    abuse = "shut up you fucking idiot, nobody wants your crap here"
    docs = [
        Doc("a", EN, "s"),
        Doc("b", f"{EN}\n{abuse}", "s"),
        Doc("c", "", "s"),
        Doc("d", abuse, "s"),
    ]
    one_by_one = [tox.filter(d) for d in docs]
    assert tox.filter_batch(docs) == one_by_one
    assert [d is True for d in one_by_one] == [True, False, True, False]
    # A chain calls it once for the batch; the rejected keep the input order.
    out = Chain([tox]).run(docs)
    assert [d.id for d in out.kept] == ["a", "c"] and [r.id for r in out.rejected] == ["b", "d"]


# A German manual page that keeps the English page's code, signatures and a note in English
# (the shape of a translated documentation page).
TRANSLATED = """\
class Counter(iterable=None, /, **kwds)

Ein Counter ist eine Unterklasse von dict, die hashbare Objekte zählt. Die Elemente werden als \
Schlüssel gespeichert und ihre Anzahl als Werte.

>>> c = Counter('gallahad')
>>> c.most_common(3)
[('a', 3), ('l', 2), ('g', 1)]

Fehlende Elemente haben die Anzahl null, statt einen KeyError auszulösen. Die Methode update() \
addiert Zählungen, anstatt sie zu ersetzen.

```python
from collections import Counter
words = Counter(open("hamlet.txt").read().split())
print(words.most_common(10))
```

Note: this method was added in Python 3.10 and returns a new Counter with the counts of the \
elements that occur in both inputs, as the other methods on this page do.
"""


def test_prose_leaves_code_doctests_and_their_output_out():
    paragraphs = prose_paragraphs(TRANSLATED)
    assert len(paragraphs) == 3
    assert paragraphs[0].startswith("Ein Counter") and paragraphs[2].startswith("Note:")
    assert not any("most_common" in p or "gallahad" in p for p in paragraphs)


def test_a_translated_page_does_not_pass_on_its_english_code_and_notes():
    f = LanguageFilter(("en",), min_score=0.3, min_share=0.5)
    ok, reason, detail = f.filter(Doc("de", TRANSLATED, "s"))
    assert (ok, reason, detail[:2]) == (False, WRONG_LANGUAGE, "de")
    # English notes fill the characters fastText reads, the German prose comes after them:
    # only the share sees that most of the page is German.
    note, german = TRANSLATED.split("\n\n")[-1], TRANSLATED.split("\n\n")[1]
    page = "\n\n".join([note] * 25 + [german] * 80)
    assert LanguageFilter(("en",), min_score=0.3).filter(Doc("de", page, "s")) is True
    ok, reason, detail = f.filter(Doc("de", page, "s"))
    assert (ok, reason) == (False, WRONG_LANGUAGE) and detail.endswith("in de"), detail


def test_english_documentation_with_foreign_examples_passes():
    page = "\n\n".join([EN, ">>> print('Der Zug nach Hamburg hat Verspätung.')", EN, FR[:90]])
    v = judge(page)
    assert v.lang == "en" and v.shares["en"] > 0.5
    assert LanguageFilter(("en",), min_score=0.5, min_share=0.5).filter(Doc("x", page, "s"))
