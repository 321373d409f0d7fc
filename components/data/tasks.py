"""Checkable task data (SFT, preference pairs, eval) built from the bundled raw corpus.

Every example is an instance of a *question* (e.g. `add:12:7`) rendered through one of a few
phrasing templates. Splits are decided per question by a hash of its key, never by sampling
rows, so no phrasing of an eval question can leak into training:

    sha256(key) % 1000 < 80  -> eval        (eval.jsonl)
                       < 140 -> prefs_test  (prefs_test.jsonl)
                       else  -> train       (sft_train.jsonl and prefs_train.jsonl sample it)

Families: add, sub (integers 0-49, never negative), reverse, upper, count (words taken from the
bundled Shakespeare plays) and speaker (who says a given line in a play). Answers are one short
line so a tiny model can learn the format; `components.evaluation.answer_check.is_correct`
checks them.

A share `tasks.sft_multi_turn` of the SFT rows are two-turn chats: an earlier question of the
same family (from the same train split) and its answer precede the row's question, so SFT sees
[user, assistant, user, assistant] and learns both assistant turns (the loss mask covers every
assistant turn, never a user turn: components/training/sft.py).
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from components.config import StageParams, TasksParams
from components.stage import StageResult
from components.tracking.stage_run import Tracker

Split = Literal["eval", "prefs_test", "train"]
EVAL_PER_MILLE = 80
PREFS_TEST_PER_MILLE = 60

FAMILIES = ("add", "sub", "reverse", "upper", "count", "speaker")
TEMPLATES: dict[str, tuple[str, ...]] = {
    "add": ("What is {a} + {b}?", "Add {a} and {b}.", "Compute {a} plus {b}."),
    "sub": ("What is {a} - {b}?", "Subtract {b} from {a}.", "Compute {a} minus {b}."),
    "reverse": (
        "Reverse the word '{w}'.",
        "Spell '{w}' backwards.",
        "Write the letters of '{w}' in reverse order.",
    ),
    "upper": (
        "Write '{w}' in uppercase.",
        "Convert '{w}' to capital letters.",
        "Uppercase this word: {w}",
    ),
    "count": (
        "How many letters are in the word '{w}'?",
        "Count the letters in '{w}'.",
        "What is the length of the word '{w}'?",
    ),
    "speaker": (
        'In Shakespeare\'s {play}, who speaks the line "{line}"?',
        'Which character in {play} says: "{line}"',
        'Who says "{line}" in {play}?',
    ),
}

MAX_OPERAND = 49
WORD_MIN_LEN, WORD_MAX_LEN, WORD_MIN_COUNT = 3, 7, 3
# Plays whose speech headers are full upper-case names ("LADY MACBETH."); the others in the
# corpus use abbreviations ("Ham.") or give one person two names (Gloster / King Richard), which
# would make answers ambiguous.
SPEAKER_PLAYS = (
    "as_you_like_it",
    "henry_v",
    "julius_caesar",
    "macbeth",
    "much_ado_about_nothing",
    "othello",
    "the_merchant_of_venice",
    "the_taming_of_the_shrew",
    "the_tempest",
    "the_winters_tale",
    "twelfth_night",
)
SPEAKERS_PER_PLAY = 5  # only the main characters: a guessable, learnable answer set
LINE_MIN_CHARS, LINE_MAX_CHARS = 25, 60
SPEECH_HEADER = re.compile(r"^([A-Z][A-Z' ]*[A-Z])\.$")
WORD = re.compile(r"[A-Za-z']+")
ROMAN = {"ii", "iii", "iv", "v", "vi", "viii"}
SMALL_WORDS = {"a", "and", "of", "the", "about"}
APOSTROPHES = {"winters": "Winter's", "nights": "Night's"}  # slugs cannot hold them


@dataclass(frozen=True)
class Question:
    task: str
    key: str  # identity of the underlying question; decides the split
    slots: dict[str, str] = field(hash=False)  # template fields
    answer: str
    wrong: tuple[str, ...]  # plausible wrong answers, for preference pairs


# ---------------------------------------------------------------- prompts


def normalize_prompt(s: str) -> str:
    """Prompt identity for the overlap checks: whitespace- and case-insensitive."""
    return " ".join(s.split()).casefold()


def split_of(key: str) -> Split:
    bucket = int(hashlib.sha256(key.encode("utf-8")).hexdigest(), 16) % 1000
    if bucket < EVAL_PER_MILLE:
        return "eval"
    if bucket < EVAL_PER_MILLE + PREFS_TEST_PER_MILLE:
        return "prefs_test"
    return "train"


# ---------------------------------------------------------------- corpus


def load_plays(raw: Path) -> dict[str, str]:
    """slug -> play text, from `<raw>/shakespeare/*.txt`."""
    files = sorted((raw / "shakespeare").glob("*.txt"))
    if not files:
        raise FileNotFoundError(
            f"no plays under {raw / 'shakespeare'}; run scripts/build_corpus.py first"
        )
    return {p.stem: p.read_text(encoding="utf-8") for p in files}


def title_from_slug(slug: str) -> str:
    """'the_merchant_of_venice' -> 'The Merchant of Venice', 'henry_v' -> 'Henry V'."""
    words = slug.split("_")
    out = [
        w.upper()
        if w in ROMAN
        else APOSTROPHES.get(w) or (w if i and w in SMALL_WORDS else w.capitalize())
        for i, w in enumerate(words)
    ]
    return " ".join(out)


def word_list(texts: Iterable[str]) -> list[str]:
    """Lower-case alphabetic words of 3-7 letters seen at least 3 times (so not typos), sorted."""
    counts = Counter(w.lower() for t in texts for w in WORD.findall(t))
    return sorted(
        w
        for w, n in counts.items()
        if n >= WORD_MIN_COUNT
        and w.isalpha()
        and w.isascii()
        and WORD_MIN_LEN <= len(w) <= WORD_MAX_LEN
    )


def parse_speeches(text: str) -> Iterator[tuple[str, list[str]]]:
    """(speaker, verse lines) for each speech: a 'NAME.' line after a blank line opens one."""
    speaker: str | None = None
    lines: list[str] = []
    previous_blank = True
    for raw_line in text.splitlines():
        line = raw_line.strip()
        header = SPEECH_HEADER.match(line) if previous_blank else None
        if header:
            if speaker and lines:
                yield speaker, lines
            speaker, lines = header.group(1), []
        elif not line:
            if speaker and lines:
                yield speaker, lines
            speaker, lines = None, []
        elif speaker and not line.startswith("["):  # stage directions are nobody's line
            lines.append(line)
        previous_blank = not line
    if speaker and lines:
        yield speaker, lines


def speaker_name(header: str) -> str:
    return " ".join(w.capitalize() for w in header.split())


# ---------------------------------------------------------------- questions


def arithmetic_questions() -> list[Question]:
    questions = []
    for a in range(MAX_OPERAND + 1):
        for b in range(MAX_OPERAND + 1):
            s = a + b
            questions.append(
                Question(
                    "add",
                    f"add:{a}:{b}",
                    {"a": str(a), "b": str(b)},
                    str(s),
                    _numbers_near(s, (s - 1, s + 1, s + 2, s - 2)),
                )
            )
            if a >= b:  # keep answers non-negative: one fewer symbol for the model to learn
                d = a - b
                questions.append(
                    Question(
                        "sub",
                        f"sub:{a}:{b}",
                        {"a": str(a), "b": str(b)},
                        str(d),
                        _numbers_near(d, (d - 1, d + 1, a + b)),
                    )
                )
    return questions


def _numbers_near(right: int, candidates: Iterable[int]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(str(c) for c in candidates if c >= 0 and c != right))


def word_questions(words: Iterable[str]) -> list[Question]:
    questions = []
    for w in words:
        slots = {"w": w}
        if w != w[::-1]:  # a palindrome's reversal is itself: no wrong answer, no signal
            swapped = w[::-1][1] + w[::-1][0] + w[::-1][2:]
            wrong = tuple(dict.fromkeys(x for x in (w, swapped) if x != w[::-1]))
            questions.append(Question("reverse", f"reverse:{w}", slots, w[::-1], wrong))
        questions.append(Question("upper", f"upper:{w}", slots, w.upper(), (w, w.capitalize())))
        n = len(w)
        questions.append(
            Question("count", f"count:{w}", slots, str(n), _numbers_near(n, (n - 1, n + 1)))
        )
    return questions


def speaker_questions(plays: dict[str, str]) -> list[Question]:
    """Lines said exactly once in the whole corpus by one of a play's main characters.

    Lines with '--' (broken-off speech) or double quotes are skipped: they read badly inside the
    quoted prompt."""
    line_counts = Counter(line.strip() for text in plays.values() for line in text.splitlines())
    questions = []
    for slug in SPEAKER_PLAYS:
        if slug not in plays:
            raise KeyError(f"play {slug!r} is missing from the corpus; rebuild data/raw")
        speeches = list(parse_speeches(plays[slug]))
        main = [s for s, _ in Counter(s for s, _ in speeches).most_common(SPEAKERS_PER_PLAY)]
        title = title_from_slug(slug)
        for speaker, lines in speeches:
            if speaker not in main:
                continue
            wrong = tuple(speaker_name(s) for s in main if s != speaker)
            for line in lines:
                if (
                    LINE_MIN_CHARS <= len(line) <= LINE_MAX_CHARS
                    and line_counts[line] == 1
                    and '"' not in line
                    and "--" not in line
                    and line[0].isupper()
                ):
                    questions.append(
                        Question(
                            "speaker",
                            f"speaker:{slug}:{line}",
                            {"play": title, "line": line},
                            speaker_name(speaker),
                            wrong,
                        )
                    )
    return questions


def all_questions(raw: Path) -> list[Question]:
    plays = load_plays(raw)
    return (
        arithmetic_questions()
        + word_questions(word_list(plays.values()))
        + speaker_questions(plays)
    )


def render(q: Question, template: int) -> str:
    return TEMPLATES[q.task][template].format(**q.slots)


# ---------------------------------------------------------------- rows


def sft_row(q: Question, prompt: str, rng: random.Random) -> dict[str, Any]:
    return {
        "task": q.task,
        "messages": [
            {"role": "user", "content": prompt},
            {"role": "assistant", "content": q.answer},
        ],
    }


def pref_row(q: Question, prompt: str, rng: random.Random) -> dict[str, Any]:
    return {
        "task": q.task,
        "prompt": [{"role": "user", "content": prompt}],
        "chosen": [{"role": "assistant", "content": q.answer}],
        "rejected": [{"role": "assistant", "content": rng.choice(q.wrong)}],
    }


# With two distinct renderings in a pool, 200 draws all repeat the prompt with odds 2**-200.
EARLIER_TURN_DRAWS = 200


def with_earlier_turn(
    row: dict[str, Any], pool: list[Question], rng: random.Random
) -> dict[str, Any]:
    """`row` (an sft row) preceded by another question of its family and that answer."""
    prompt = row["messages"][0]["content"]
    # Random draws until one differs from `prompt` (the same draws as ever, so the same data);
    # bounded, because a pool that only renders `prompt` would never give one.
    for _ in range(EARLIER_TURN_DRAWS):
        q = rng.choice(pool)
        earlier = render(q, rng.randrange(len(TEMPLATES[q.task])))
        if earlier != prompt:
            break
    else:
        raise ValueError(
            f"no other question of task {row['task']!r} to put before {prompt!r} in "
            f"{EARLIER_TURN_DRAWS} draws from its pool of {len(pool)}: the pool is (nearly) "
            "that one question; generate more questions of the task or set "
            "tasks.sft_multi_turn: 0"
        )
    first = [{"role": "user", "content": earlier}, {"role": "assistant", "content": q.answer}]
    return {**row, "messages": first + row["messages"]}


def eval_row(q: Question, prompt: str, rng: random.Random) -> dict[str, Any]:
    return {"task": q.task, "prompt": prompt, "answer": q.answer}


# output file -> (split its questions come from, row builder)
FILES = {
    "sft_train": ("train", sft_row),
    "prefs_train": ("train", pref_row),
    "prefs_test": ("prefs_test", pref_row),
    "eval": ("eval", eval_row),
}
DEFAULT_SIZES = TasksParams().model_dump(include=set(FILES))
DEFAULT_MULTI_TURN = TasksParams().sft_multi_turn


def per_family(n: int) -> list[int]:
    """n split as evenly as possible over FAMILIES (the first ones get the remainder)."""
    base, extra = divmod(n, len(FAMILIES))
    return [base + (i < extra) for i in range(len(FAMILIES))]


Pools = dict[tuple[str, Split], list[Question]]


def pools_of(questions: Iterable[Question]) -> Pools:
    """Questions grouped by (family, split), in key order."""
    pools: Pools = {}
    for q in sorted(questions, key=lambda q: q.key):
        pools.setdefault((q.task, split_of(q.key)), []).append(q)
    return pools


def make_file(name: str, pools: Pools, n: int, seed: int) -> list[dict[str, Any]]:
    split, build = FILES[name]
    rng = random.Random(f"{seed}:{name}")  # str seeds hash with sha512: stable across runs
    rows = []
    for family, k in zip(FAMILIES, per_family(n), strict=True):
        pool = pools.get((family, split), [])
        if len(pool) < k:
            raise ValueError(
                f"{name}: only {len(pool)} {family!r} questions in split {split!r}"
                f" but {k} requested; lower the size or widen the question pool"
            )
        for q in rng.sample(pool, k):
            rows.append(build(q, render(q, rng.randrange(len(TEMPLATES[family]))), rng))
    rng.shuffle(rows)  # consumers take the first N rows: mix the families
    return [{"id": f"{name}-{i:05d}", **row} for i, row in enumerate(rows)]


def user_prompts(row: dict[str, Any]) -> list[str]:
    """Every user message of the row, in order."""
    if "messages" in row:
        return [m["content"] for m in row["messages"] if m["role"] == "user"]
    if isinstance(row["prompt"], list):
        return [m["content"] for m in row["prompt"] if m["role"] == "user"]
    return [row["prompt"]]


def make_multi_turn(
    rows: list[dict[str, Any]], pools: Pools, share: float, seed: int
) -> list[dict[str, Any]]:
    """`share` of the sft rows (chosen by seed) get an earlier turn of their family; own RNG
    stream, so the single-turn rows and the other files are unchanged by it."""
    rng = random.Random(f"{seed}:sft_multi_turn")
    chosen = set(rng.sample(range(len(rows)), round(share * len(rows))))
    return [
        with_earlier_turn(row, pools[(row["task"], "train")], rng) if i in chosen else row
        for i, row in enumerate(rows)
    ]


def check_disjoint(files: dict[str, list[dict[str, Any]]]) -> None:
    """Raise if an eval prompt is in any training file, or a prefs_test prompt in a train file."""
    prompts = {
        name: {normalize_prompt(p) for r in rows for p in user_prompts(r)}
        for name, rows in files.items()
    }
    rules = [
        ("eval", "sft_train"),
        ("eval", "prefs_train"),
        ("eval", "prefs_test"),
        ("prefs_test", "prefs_train"),
        ("prefs_test", "sft_train"),
    ]
    for held_out, train in rules:
        shared = prompts.get(held_out, set()) & prompts.get(train, set())
        if shared:
            raise ValueError(
                f"{len(shared)} prompts of {held_out} also in {train}, e.g. {sorted(shared)[0]!r}"
            )


def generate(
    raw: Path,
    seed: int,
    sizes: dict[str, int] | None = None,
    multi_turn: float = DEFAULT_MULTI_TURN,
) -> dict[str, list[dict[str, Any]]]:
    """All task files (name -> rows), deterministic for (raw corpus, seed, sizes, multi_turn)."""
    pools = pools_of(all_questions(raw))
    files = {name: make_file(name, pools, n, seed) for name, n in (sizes or DEFAULT_SIZES).items()}
    if "sft_train" in files:
        files["sft_train"] = make_multi_turn(files["sft_train"], pools, multi_turn, seed)
    check_disjoint(files)
    return files


# ---------------------------------------------------------------- the stage


class Reads(StageParams):
    seed: int
    tasks: TasksParams


@dataclass(frozen=True)
class Paths:
    raw: Path  # the bundled corpus (plays under raw/shakespeare)
    out: Path  # directory of the task files: <name>.jsonl for each name in FILES
    metrics: Path


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def run(params: Reads, paths: Paths, tracker: Tracker) -> StageResult:
    """Write every task file; same corpus, seed and sizes give byte-identical files."""
    sizes = params.tasks.model_dump(include=set(FILES))
    files = generate(paths.raw, params.seed, sizes, params.tasks.sft_multi_turn)
    paths.out.mkdir(parents=True, exist_ok=True)
    metrics: dict[str, int] = {}
    for name, rows in files.items():
        write_jsonl(paths.out / f"{name}.jsonl", rows)
        metrics[f"rows.{name}"] = len(rows)
        for task, n in sorted(Counter(r["task"] for r in rows).items()):
            metrics[f"tasks.{name}.{task}"] = n
    sft_rows = files.get("sft_train", [])
    metrics["multi_turn.sft_train"] = sum(len(r["messages"]) > 2 for r in sft_rows)
    return StageResult(metrics=metrics)
