"""Write a directory so a failed run never leaves a half-written one in place of a good one."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def replace_dir(new: Path, dest: Path) -> None:
    """Put `new` at `dest`; an existing `dest` is moved aside first, then deleted."""
    old = dest.with_name(f".{dest.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if dest.exists():
        dest.rename(old)
    new.rename(dest)
    if old.exists():
        shutil.rmtree(old)


@contextmanager
def atomic_dir(out: Path) -> Iterator[Path]:
    """Yield a sibling temp dir to write into; on success it replaces `out`, on error it goes.

    A sibling (same filesystem) so the final rename is atomic.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; a model directory should not be
    try:
        yield tmp
        replace_dir(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
