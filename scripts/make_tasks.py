"""Write the task data (data/tasks/*.jsonl) from the bundled raw corpus.

Thin CLI over `components.data.tasks.generate`: same raw corpus + seed + sizes give byte-identical
files. Schemas and the split rule are in data/tasks/README.md.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

from components.data.tasks import DEFAULT_SIZES, generate

DEFAULT_SEED = 1234  # the project seed in params.yaml


def write_jsonl(path: Path, rows: list[dict]) -> None:
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--raw",
        type=Path,
        default=Path("data/raw"),
        help="raw corpus directory (default: data/raw)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("data/tasks"),
        help="output directory (default: data/tasks)",
    )
    parser.add_argument(
        "--seed", type=int, default=DEFAULT_SEED, help=f"sampling seed (default: {DEFAULT_SEED})"
    )
    for name, n in DEFAULT_SIZES.items():
        parser.add_argument(
            f"--{name.replace('_', '-')}",
            type=int,
            default=n,
            dest=name,
            help=f"rows in {name}.jsonl (default: {n})",
        )
    args = parser.parse_args(argv)

    sizes = {name: getattr(args, name) for name in DEFAULT_SIZES}
    files = generate(args.raw, args.seed, sizes)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, rows in files.items():
        path = args.out / f"{name}.jsonl"
        write_jsonl(path, rows)
        by_task = dict(sorted(Counter(r["task"] for r in rows).items()))
        print(f"{path}: {len(rows)} rows, {path.stat().st_size:,} bytes, {by_task}")


if __name__ == "__main__":
    main()
