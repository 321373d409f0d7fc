"""Reading an eval JSONL (`{"id", "task", "prompt", "answer"}` per line) with errors that name
the file and line: a malformed set must stop evaluation, never score silently."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

EVAL_KEYS = ("id", "task", "prompt", "answer")


class EvalSetError(ValueError):
    """An eval set line is not JSON, lacks a field, has an empty one, or repeats an id."""


def read_eval_set(
    path: str | Path, limit: int | None = None, keys: tuple[str, ...] = EVAL_KEYS
) -> list[dict[str, Any]]:
    """The first `limit` examples (all when None), each checked for `keys` and a unique id."""
    path = Path(path)
    examples: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    with path.open() as f:
        for lineno, line in enumerate(f, 1):
            if limit is not None and len(examples) >= limit:
                break
            if not line.strip():
                continue
            try:
                ex = json.loads(line)
            except json.JSONDecodeError as err:
                raise EvalSetError(f"{path}:{lineno} is not JSON ({err.msg})") from None
            missing = [k for k in keys if not isinstance(ex, dict) or k not in ex]
            if missing:
                raise EvalSetError(f"{path}:{lineno} lacks keys {missing}; expected {keys}")
            blank = [
                k for k in keys if ex[k] is None or (isinstance(ex[k], str) and not ex[k].strip())
            ]
            if blank:
                raise EvalSetError(f"{path}:{lineno} has empty {blank}; every field needs a value")
            key = str(ex["id"])
            if key in seen:
                raise EvalSetError(
                    f"{path}:{lineno} repeats id {key!r} of line {seen[key]}; ids must be unique"
                )
            seen[key] = lineno
            examples.append(ex)
    if not examples:
        raise EvalSetError(f"{path} holds no eval examples")
    return examples
