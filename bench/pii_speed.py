"""PII redaction speed on the bundled corpus: ours against DataTrove's PIIFormatter (e-mails and
public IPs only) and against the redactor of an earlier commit, in one process, best of three.

    PYTHONPATH=. python -m bench.pii_speed [--old-commit b736f7b]

Needs the bench extra (DataTrove). The old redactor is read from git (`git show`), so the
comparison runs without a second checkout.
"""

from __future__ import annotations

import argparse
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from datatrove.pipeline.formatters import PIIFormatter

from components.config import load_params
from components.data import pii
from components.data.ingest import ingest
from components.data.pii_check import find_pii


def best_of(fn: Callable[[], object], n: int = 3) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def module_at(commit: str, path: str) -> ModuleType:
    source = subprocess.run(
        ["git", "show", f"{commit}:{path}"], capture_output=True, text=True, check=True
    ).stdout
    module = ModuleType(f"{path}@{commit}")
    exec(compile(source, module.__name__, "exec"), module.__dict__)  # noqa: S102
    return module


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--old-commit", default="b736f7b", help="commit of the redactor to compare")
    ap.add_argument(
        "--synthetic",
        type=float,
        metavar="MIB",
        help="the curation bench's synthetic corpus of this size (PII in 10%% of documents) "
        "instead of data/raw",
    )
    args = ap.parse_args()
    params = load_params("params.yaml")
    if args.synthetic:
        from bench.curation.corpus import build

        docs, _ = build(params, Path("data/raw"), args.synthetic, params.seed, {})
    else:
        docs, _ = ingest(Path("data/raw"), params.ingest.sources, params.ingest.unicode_form)
    texts = [d.text for d in docs]
    old = module_at(args.old_commit, "components/data/pii.py")
    datatrove = PIIFormatter()
    t_dt = best_of(lambda: [datatrove.format(t) for t in texts])
    t_old = best_of(lambda: [old.redact(t) for t in texts])
    # A cold cache each time: the phone matcher's cache would make later passes look free.
    t_new = best_of(lambda: (pii._phones_in.cache_clear(), [pii.redact(t) for t in texts]))
    mib = sum(len(t) for t in texts) / 2**20
    print(f"{len(texts)} documents, {mib:.2f} MiB")
    print(f"  DataTrove PIIFormatter {t_dt:.3f}s")
    print(f"  ours @{args.old_commit} {t_old:.3f}s  ({t_dt / t_old:.2f}x DataTrove)")
    print(f"  ours now {t_new:.3f}s  ({t_dt / t_new:.2f}x DataTrove, {t_old / t_new:.1f}x faster)")
    found_old, found_new, left = Counter(), Counter(), Counter()
    for t in texts:
        found_old += old.redact(t)[1]
        redacted, found = pii.redact(t)
        found_new += found
        left += find_pii(redacted)
    print(f"  redacted @{args.old_commit}: {dict(found_old)}")
    print(f"  redacted now: {dict(found_new)}; left by the gate's detectors: {dict(left)}")


if __name__ == "__main__":
    main()
