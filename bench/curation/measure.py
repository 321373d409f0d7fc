"""How both sides are measured: CPU seconds of one process pinned to one core, so documents per
CPU second is documents per second per core, and stays honest on a machine shared with other
work; wall-clock seconds are reported beside it."""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from tqdm import tqdm

T = TypeVar("T")
Timing = dict[str, float]

# Keys of the results that vary from run to run; every other number is a decision, and two runs
# on the same corpus and params must agree on it (bench/curation/compare.py checks that).
TIMING_KEYS = frozenset(
    {
        "seconds",
        "cpu_seconds",
        "docs_per_s",
        "docs_per_s_wall",
        "docs_per_s_per_core",
        "generation_seconds",
    }
)


def pin_to_one_core() -> int | None:
    """One process on one core, so 'per core' is literal; BLAS thread pools at one thread."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    if not hasattr(os, "sched_setaffinity"):
        return None
    core = max(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {core})
    return core


def timed(fn: Callable[[], T]) -> tuple[T, Timing]:
    gc.collect()  # a collection triggered by the previous block's garbage is not this block's
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    return out, {"seconds": round(wall, 3), "cpu_seconds": round(cpu, 3)}


def rate(n: int, t: Timing) -> dict[str, float]:
    return {
        "docs_per_s": round(n / max(t["cpu_seconds"], 1e-9), 1),
        "docs_per_s_wall": round(n / max(t["seconds"], 1e-9), 1),
    }


def block_result(n: int, t: Timing, **counts: Any) -> dict[str, Any]:
    """One block over all `n` documents: its counts, then its times and rates."""
    return {"docs_in": n, **counts, **t, **rate(n, t)}


def chain_result(n: int, kept: int, dropped_by_reason: dict[str, int], t: Timing) -> dict:
    """A chain over `n` documents, each block seeing what survived the blocks before it."""
    r = rate(n, t)
    return {
        "docs_in": n,
        "kept": kept,
        "dropped": n - kept,
        "dropped_by_reason": dropped_by_reason,
        **t,
        "docs_per_s_per_core": r["docs_per_s"],
        "docs_per_s_wall": r["docs_per_s_wall"],
    }


def progress(items: Iterable[T], desc: str) -> Iterable[T]:
    return tqdm(items, desc=desc, unit="doc", mininterval=2.0, leave=False)
