"""Where the refinery's per-document work runs: in this process, or on a Dask cluster.

The refinery hands an engine a pure function and a list of partitions and gets the results
back in partition order, so the corpus-level steps after it (quality-model fit, dedup) see
documents in the same order whichever engine ran. Dask (`distributed`) is the scale-out engine:
a local cluster of worker processes starts in seconds inside the stage (the embedded default
for tests and laptops), and the same code joins a running scheduler by address — one started
by `dask-jobqueue` on Slurm, `dask-kubernetes`, or `dask scheduler` on the GPU nodes that
`infra/` provisions. Workers need this package installed (same image as the stage).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Protocol, TypeVar

from tqdm import tqdm

from components.config import EngineParams

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


class Engine(Protocol):
    name: str

    @property
    def workers(self) -> int: ...

    def map(self, fn: Callable[[T], R], items: Sequence[T], desc: str) -> list[R]: ...


class InProcessEngine:
    """The reference: runs every partition here, one after the other."""

    name = "local"
    workers = 1

    def map(self, fn: Callable[[T], R], items: Sequence[T], desc: str) -> list[R]:
        return [fn(item) for item in tqdm(items, desc=desc, unit="part")]


class DaskEngine:
    """Runs partitions as tasks on a Dask cluster through a connected client."""

    name = "dask"

    def __init__(self, client) -> None:  # dask.distributed.Client
        self.client = client

    @property
    def workers(self) -> int:
        return len(self.client.scheduler_info()["workers"])

    def map(self, fn: Callable[[T], R], items: Sequence[T], desc: str) -> list[R]:
        from dask.distributed import as_completed

        # Scatter first: partitions carry document text, which should travel to workers as
        # data, not be pickled into the task graph.
        data = self.client.scatter(list(items))
        futures = self.client.map(fn, data, pure=False)
        for _ in tqdm(as_completed(futures), total=len(futures), desc=desc, unit="part"):
            pass
        return self.client.gather(futures)  # in submission order, not completion order


@contextmanager
def open_engine(cfg: EngineParams) -> Iterator[Engine]:
    if cfg.kind == "local":
        yield InProcessEngine()
        return
    from dask.distributed import Client, LocalCluster

    if cfg.address:
        log.info("joining Dask scheduler %s", cfg.address)
        with Client(cfg.address) as client:
            yield DaskEngine(client)
        return
    log.info("starting a local Dask cluster of %d worker processes", cfg.workers)
    with (
        LocalCluster(
            n_workers=cfg.workers, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        yield DaskEngine(client)


def partitions(items: Sequence[T], size: int) -> list[list[T]]:
    return [list(items[i : i + size]) for i in range(0, len(items), size)]
