from components.data.ngram_index import NgramIndex, text_grams

LONG = "one two three four five six seven"  # 7 words: three 5-grams
SHORT = "alpha beta gamma delta"  # 4 words: matched whole with n=5, min_words=3


def test_counts_distinct_sequences_once_per_key_that_holds_them():
    index = NgramIndex(n=5, min_words=3)
    index.add("a", LONG)
    index.add("b", LONG)  # the same item in a second set counts there too
    index.add("a", SHORT)
    text = f"x {LONG} y {LONG} z {SHORT.upper()}, {SHORT}"  # each repeated: counted once
    assert index.counts(text) == {"a": 4, "b": 3}
    assert index.counts("four five six seven") == {}  # 4 words of a 5-gram


def test_short_texts_are_matched_whole_and_tiny_ones_not_indexed():
    index = NgramIndex(n=5, min_words=3)
    assert index.add("short", SHORT)
    assert not index.add("tiny", "alpha beta")
    assert index.checked == {"short"}
    assert index.counts("alpha beta gamma") == {}  # a prefix of the short item
    assert index.counts("words then alpha beta gamma delta") == {"short": 1}  # at the very end


def test_min_words_above_n_still_looks_for_texts_of_n_words():
    index = NgramIndex(n=5, min_words=8)
    assert index.min_words == 5
    assert index.add("five", "one two three four five")
    assert not index.add("four", SHORT)
    assert index.counts("zero one two three four five six") == {"five": 1}


def test_matches_gives_the_first_sequence_found_and_respects_exclude():
    index = NgramIndex(n=5, min_words=5)
    index.add("answer", LONG, exclude=text_grams("ONE two three four five!", 5))
    assert index.matches(["one two three four five", f"{LONG} eight"]) == {
        "answer": "two three four five six"
    }
