import pytest

from components.data.documents import Doc
from components.data.web_rules import (
    C4_CURLY_BRACKET,
    C4_FEW_SENTENCES,
    C4_LONG_WORD,
    C4_LOREM_IPSUM,
    C4_NO_LINES_LEFT,
    FW_CHAR_DUPLICATES,
    FW_LINE_PUNCT,
    FW_NEWLINES,
    FW_SHORT_LINES,
    C4LineCleaner,
    C4QualityFilter,
    FineWebQualityFilter,
)

PROSE = "\n".join(
    f"Paragraph {i} explains how the river survey was planned and carried out in detail. "
    f"It also lists the people who helped with sample number {i}."
    for i in range(8)
)


def doc(text):
    return Doc("d", text, "s")


def test_good_prose_passes_both():
    assert C4QualityFilter().filter(doc(PROSE)) is True
    assert FineWebQualityFilter().filter(doc(PROSE)) is True


@pytest.mark.parametrize(
    "text, reason, detail",
    [
        ("Lorem ipsum dolor sit amet. " + PROSE, C4_LOREM_IPSUM, "'lorem ipsum' at 0"),
        ("f() { return 1; } " + PROSE, C4_CURLY_BRACKET, "'{' at 4"),
        (PROSE + " " + "x" * 1001, C4_LONG_WORD, "a word of 1001 > 1000 chars"),
        ("One sentence. Two sentences. Three.", C4_FEW_SENTENCES, "3 sentences < 5"),
    ],
)
def test_c4_rules_say_what_tripped_them(text, reason, detail):
    assert C4QualityFilter().filter(doc(text)) == (False, reason, detail)


def test_c4_rules_switch_off():
    f = C4QualityFilter(
        filter_lorem_ipsum=False,
        filter_curly_bracket=False,
        max_word_length=None,
        min_sentences=None,
    )
    assert f.filter(doc("lorem ipsum { " + "x" * 2000)) is True


@pytest.mark.parametrize(
    "text, reason",
    [
        (
            "\n".join(
                f"a long line number {i} of a menu without punctuation at the end" * 2
                for i in range(20)
            ),
            FW_LINE_PUNCT,
        ),
        ("\n".join([*(f"Menu item {i}." for i in range(20)), PROSE]), FW_SHORT_LINES),
        (PROSE + "\n" + PROSE.split("\n")[0], FW_CHAR_DUPLICATES),
        (
            "\n".join(f"Incomprehensibilities{i} antidisestablishmentarianism." for i in range(10)),
            FW_NEWLINES,
        ),
    ],
)
def test_fineweb_rules(text, reason):
    ok, why, detail = FineWebQualityFilter().filter(doc(text))
    assert (ok, why) == (False, reason)
    measured, threshold = detail.rsplit(" ", 3)[-3::2]  # "<what> <value> <|> <threshold>"
    assert float(measured) != float(threshold), detail


def test_fineweb_detail_names_the_measured_value_and_the_threshold():
    menu = "\n".join(f"a long line number {i} of a menu without punctuation" for i in range(4))
    ok, _, detail = FineWebQualityFilter(line_punct_min=0.5).filter(doc(menu + "\nThe end."))
    assert (ok, detail) == (False, "lines ending in punctuation 0.20 < 0.5")


def test_fineweb_rules_switch_off():
    f = FineWebQualityFilter(
        line_punct_min=None, short_line_max=None, char_duplicates_max=None, newline_ratio_max=None
    )
    assert f.filter(doc("a\nb\na\nb")) is True


def test_c4_line_cleaner_removes_lines_per_rule_and_counts_them():
    page = "\n".join(
        [
            "Home",  # no terminal punctuation
            "Please enable JavaScript to view this page.",  # javascript
            "This site uses cookies. Read our privacy policy.",  # policy
            "Hi there.",  # fewer than 3 words
            "The river survey started in May.[1] It ended in June.[citation needed]",
        ]
    )
    cleaner = C4LineCleaner()
    out = cleaner.apply(Doc("a", page, "s"))
    assert out.text == "The river survey started in May. It ended in June."
    assert cleaner.counters == {
        "c4_lines_removed.no_terminal_punct": 1,
        "c4_lines_removed.javascript": 1,
        "c4_lines_removed.policy": 1,
        "c4_lines_removed.too_few_words": 1,
    }
    assert out.id == "a"


def test_c4_line_rules_switch_off_one_by_one():
    verse = "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind"
    assert C4LineCleaner(terminal_punct=False).apply(Doc("v", verse, "s")).text == verse
    assert C4LineCleaner().apply(Doc("v", verse, "s")).text == ""
    code = "The first argument is sys.argv[1] here."
    assert C4LineCleaner(remove_citations=False).apply(Doc("c", code, "s")).text == code
    assert C4LineCleaner().apply(Doc("c", code, "s")).text == "The first argument is sys.argv here."


def test_page_left_without_lines_is_dropped_as_such():
    cleaned = C4LineCleaner().apply(Doc("a", "Menu\nLogin\nSearch", "s"))
    ok, reason, _ = C4QualityFilter().filter(cleaned)
    assert (ok, reason) == (False, C4_NO_LINES_LEFT)
