"""Do two results of the curation bench agree on every decision?

    python -m bench.curation.compare OLD.json NEW.json

Every number and list in the results is a decision (documents, kept and dropped counts per
block and reason, corpus kinds) except timings, the ratios made of them, the machine and the
prose. Runs on the same corpus size, seed and params must agree on all of them: a refactor of
the bench or of the blocks that changes one has changed what a block decides. Exit status 1 if
a value differs or is missing from NEW; keys only in NEW (added to the report) are listed.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.curation.measure import TIMING_KEYS

NOT_DECISIONS = frozenset(
    {"ratios", "pinned_core", "cpu_count", "measure", "mapping", "datatrove_setup"}
)


def decisions(result: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, value) of every decision in a result."""
    if not isinstance(result, dict):
        yield path, result
        return
    for key, value in result.items():
        if key in TIMING_KEYS or (not path and key in NOT_DECISIONS):
            continue
        yield from decisions(value, f"{path}.{key}" if path else key)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("old", type=Path)
    ap.add_argument("new", type=Path)
    args = ap.parse_args(argv)
    old, new = (dict(decisions(json.loads(p.read_text()))) for p in (args.old, args.new))
    differ = [k for k in old if k in new and old[k] != new[k]]
    for k in differ:
        print(f"differs  {k}: {old[k]!r} -> {new[k]!r}")
    missing = [k for k in old if k not in new]
    for k in missing:
        print(f"missing  {k} (old: {old[k]!r})")
    for k in (k for k in new if k not in old):
        print(f"new      {k}: {new[k]!r}")
    print(f"{len(old)} decisions compared: {len(differ)} differ, {len(missing)} missing")
    sys.exit(1 if differ or missing else 0)


if __name__ == "__main__":
    main()
