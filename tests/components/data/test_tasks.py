"""Task data: answers are right, splits do not leak, the judge is strict where it matters."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from components.config import TasksParams
from components.data import tasks
from components.evaluation.answer_check import is_correct

ROOT = Path(__file__).resolve().parents[3]
RAW = ROOT / "data" / "raw"
TASKS_DIR = ROOT / "data" / "tasks"
SEED = 1234


@pytest.fixture(scope="module")
def files() -> dict[str, list[dict]]:
    return tasks.generate(RAW, SEED)


# ------------------------------------------------------------------ pure helpers


def test_parse_speeches_skips_stage_directions_and_abbreviations() -> None:
    text = (
        "ACT I.\n\n[Enter witches.]\n\nFIRST WITCH.\nWhen shall we three meet again?\n"
        "[Thunder.]\nIn thunder, lightning, or in rain?\n\nHam.\nNot a speech header.\n"
    )
    assert list(tasks.parse_speeches(text)) == [
        ("FIRST WITCH", ["When shall we three meet again?", "In thunder, lightning, or in rain?"])
    ]


def test_title_from_slug() -> None:
    assert tasks.title_from_slug("the_winters_tale") == "The Winter's Tale"
    assert tasks.title_from_slug("henry_v") == "Henry V"
    assert tasks.title_from_slug("the_merchant_of_venice") == "The Merchant of Venice"


def test_split_depends_only_on_the_question_key() -> None:
    assert tasks.split_of("add:3:4") == tasks.split_of("add:3:4")
    splits = {tasks.split_of(f"add:{a}:{b}") for a in range(50) for b in range(50)}
    assert splits == {"eval", "prefs_test", "train"}


def test_check_disjoint_rejects_a_leaked_eval_prompt() -> None:
    leaked = {
        "eval": [{"prompt": "What is 1 + 2?", "answer": "3"}],
        "sft_train": [
            {
                "messages": [
                    {"role": "user", "content": " what is 1 +  2? "},
                    {"role": "assistant", "content": "3"},
                ]
            }
        ],
    }
    with pytest.raises(ValueError, match="eval also in sft_train"):
        tasks.check_disjoint(leaked)
    # A leak in a later turn of a chat counts too.
    leaked["sft_train"][0]["messages"] = [
        {"role": "user", "content": "What is 2 + 2?"},
        {"role": "assistant", "content": "4"},
    ] + leaked["sft_train"][0]["messages"]
    with pytest.raises(ValueError, match="eval also in sft_train"):
        tasks.check_disjoint(leaked)


# ------------------------------------------------------------------ generated data


def test_sizes_schema_and_families(files: dict[str, list[dict]]) -> None:
    assert {k: len(v) for k, v in files.items()} == tasks.DEFAULT_SIZES
    keys = {
        "sft_train": {"id", "task", "messages"},
        "eval": {"id", "task", "prompt", "answer"},
        "prefs_train": {"id", "task", "prompt", "chosen", "rejected"},
        "prefs_test": {"id", "task", "prompt", "chosen", "rejected"},
    }
    for name, rows in files.items():
        assert all(set(r) == keys[name] for r in rows), name
        assert {r["task"] for r in rows} == set(tasks.FAMILIES), name
        assert len({r["id"] for r in rows}) == len(rows), name


def test_splits_are_disjoint(files: dict[str, list[dict]]) -> None:
    prompts = {
        name: {tasks.normalize_prompt(tasks.user_prompts(r)[0]) for r in rows}
        for name, rows in files.items()
    }
    for train in ("sft_train", "prefs_train", "prefs_test"):
        assert not prompts["eval"] & prompts[train], train
    for train in ("sft_train", "prefs_train"):
        assert not prompts["prefs_test"] & prompts[train], train


def speakers_index(plays: dict[str, str]) -> dict[tuple[str, str], set[str]]:
    """(play title, line) -> who says it, from the raw play texts."""
    index: dict[tuple[str, str], set[str]] = {}
    for slug, text in plays.items():
        for who, lines in tasks.parse_speeches(text):
            for line in lines:
                index.setdefault((tasks.title_from_slug(slug), line), set()).add(
                    tasks.speaker_name(who)
                )
    return index


def expected_answer(task: str, prompt: str, speakers: dict[tuple[str, str], set[str]]) -> str:
    """Recompute the answer from the prompt text alone, independently of the generator."""
    if task in ("add", "sub"):
        a, b = map(int, re.findall(r"\d+", prompt))
        if prompt.startswith("Subtract"):  # "Subtract {b} from {a}."
            a, b = b, a
        return str(a + b if task == "add" else a - b)
    if task == "speaker":
        line = re.search(r'"(.*)"', prompt).group(1)
        play = re.search(
            r"(?:Shakespeare's (.*?), who)|(?:in (.*?) says)|(?:\" in (.*)\?$)", prompt
        ).groups()
        who = speakers[(next(p for p in play if p), line)]
        assert len(who) == 1, (prompt, who)
        return next(iter(who))
    word = (re.search(r"'([a-z]+)'", prompt) or re.search(r": ([a-z]+)$", prompt)).group(1)
    return {"reverse": word[::-1], "upper": word.upper(), "count": str(len(word))}[task]


def test_every_answer_is_right_and_every_rejected_wrong(files: dict[str, list[dict]]) -> None:
    speakers = speakers_index(tasks.load_plays(RAW))
    for name, rows in files.items():
        for r in rows:
            for prompt, answer in zip(tasks.user_prompts(r), answers(name, r), strict=True):
                right = expected_answer(r["task"], prompt, speakers)
                assert answer == right, (name, r)
                assert "\n" not in answer and len(answer) <= 20, r
                if "rejected" in r:
                    assert not is_correct(right, r["rejected"][0]["content"]), r


def answers(name: str, row: dict) -> list[str]:
    """The answer to each user turn (sft chats may have two)."""
    if name == "sft_train":
        return [m["content"] for m in row["messages"] if m["role"] == "assistant"]
    return [row["answer"] if name == "eval" else row["chosen"][0]["content"]]


def test_a_share_of_sft_rows_are_two_turn_chats_of_one_family(files: dict[str, list[dict]]):
    rows = files["sft_train"]
    chats = [r for r in rows if len(r["messages"]) > 2]
    assert len(chats) == round(tasks.DEFAULT_MULTI_TURN * len(rows)) > 0
    for r in chats:
        assert [m["role"] for m in r["messages"]] == ["user", "assistant", "user", "assistant"]
        first, second = tasks.user_prompts(r)
        assert first != second
    assert {r["task"] for r in chats} == set(tasks.FAMILIES)
    # Only the SFT file changes: the other files do not depend on the multi-turn share.
    single = tasks.generate(RAW, SEED, multi_turn=0.0)
    assert all(len(r["messages"]) == 2 for r in single["sft_train"])
    assert {k: v for k, v in single.items() if k != "sft_train"} == {
        k: v for k, v in files.items() if k != "sft_train"
    }
    assert [r for r in rows if len(r["messages"]) == 2] == [
        r for r, m in zip(single["sft_train"], rows, strict=True) if len(m["messages"]) == 2
    ]


def test_generation_is_deterministic_for_a_seed(files: dict[str, list[dict]]) -> None:
    assert tasks.generate(RAW, SEED) == files  # a second, independent run end to end
    pools = tasks.pools_of(tasks.all_questions(RAW))
    assert tasks.make_file("eval", pools, 12, SEED + 1) != tasks.make_file("eval", pools, 12, SEED)


def test_stage_writes_the_generated_rows_byte_for_byte_the_same_twice(tmp_path: Path) -> None:
    sizes = TasksParams(sft_train=12, prefs_train=12, prefs_test=6, eval=6)
    params = tasks.Reads(seed=SEED, tasks=sizes)
    outs = []
    for run in ("a", "b"):
        paths = tasks.Paths(raw=RAW, out=tmp_path / run, metrics=tmp_path / f"{run}.json")
        result = tasks.run(params, paths, tracker=None)
        outs.append({p.name: p.read_bytes() for p in sorted(paths.out.glob("*.jsonl"))})
    assert outs[0] == outs[1] and len(outs[0]) == 4
    expected = tasks.generate(
        RAW, SEED, sizes.model_dump(include=set(tasks.FILES)), sizes.sft_multi_turn
    )
    for name, rows in expected.items():
        written = [json.loads(line) for line in outs[0][f"{name}.jsonl"].decode().splitlines()]
        assert written == rows
        assert result.metrics[f"rows.{name}"] == len(rows)


def test_an_earlier_turn_that_can_only_repeat_the_prompt_is_refused_not_looped(monkeypatch):
    """A task with one template and a pool of one question renders only the prompt itself."""
    import random

    monkeypatch.setitem(tasks.TEMPLATES, "add", ("What is {a} + {b}?",))
    q = tasks.Question("add", "add:1:2", {"a": "1", "b": "2"}, "3", ("4",))
    row = tasks.sft_row(q, tasks.render(q, 0), random.Random(0))
    with pytest.raises(ValueError, match=r"no other question of task 'add' to put before"):
        tasks.with_earlier_turn(row, [q], random.Random(0))
