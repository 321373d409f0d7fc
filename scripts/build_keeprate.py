"""Build the clean-text benchmarks `data/keeprate/*.jsonl` from text already on this machine.

Five genres, each from sources with a redistributable licence (data/SOURCES.md, section 4):

- prose: the Vim user manual (`usr_*.txt`, Open Publication License), one record per section;
- reference: docstrings of permissively licensed Python packages in the venv (Apache-2.0),
  one record per module (its functions and classes with their Args:/Returns: sections), and
  CMake's command reference (BSD-3-Clause), one record per command;
- code: Node.js API documentation (MIT), one record per `##` section (prose around code blocks);
- licence: the licence texts of /usr/share/common-licenses and the LICENSE files of the venv's
  packages, one record per distinct text;
- dialogue: the bundled plays (data/raw/shakespeare, public domain), one record per scene.

Every record is a document the refinery should keep. Records are assigned to a split by their
group (the file they come from), so sections of one page never straddle tuning and held-out.

`data/keeprate/docs_heldout.jsonl` is a documentation source held out whole (split
`docs_heldout`): the docstrings of the Python standard library (PSF-2.0), one record per module.
It was built before the documentation rule set was tuned and nothing is tuned on it; it is not
the quality model's reference sample either (that is clean.jsonl's tuning split).
Deterministic: sorted inputs, hash-based selection, no randomness.

    PYTHONPATH=. .venv/bin/python scripts/build_keeprate.py [clean|docs_heldout]
"""

from __future__ import annotations

import ast
import hashlib
import json
import re
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

from datasketch import MinHash

OUT = Path("data/keeprate/clean.jsonl")
DOCS_HELDOUT = Path("data/keeprate/docs_heldout.jsonl")
STDLIB = Path(sysconfig.get_paths()["stdlib"])
# Not documentation of the library: its tests, bundled applications, generated tables.
STDLIB_SKIP = {"test", "tests", "idlelib", "lib2to3", "turtledemo", "site-packages", "encodings"}
SITE = Path(sys.prefix) / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}"
SITE = SITE / "site-packages"
MIN_CHARS, MAX_CHARS = 400, 12_000
PER_SOURCE = 90  # records kept per source (hash order), to stay a few MB
DOCSTRING_PACKAGES = ("datasets", "peft", "trl", "accelerate", "transformers/generation")


def h(s: str) -> str:
    return hashlib.sha1(s.encode()).hexdigest()


def split_of(group: str) -> str:
    return "tuning" if int(h(group)[:8], 16) % 2 == 0 else "heldout"


def record(source: str, genre: str, group: str, key: str, text: str) -> dict:
    return {
        "id": f"{source}:{key}",
        "source": source,
        "genre": genre,
        "split": split_of(group),
        "text": text.strip(),
    }


def vim_manual() -> Iterator[dict]:
    for path in sorted(Path("/usr/share/vim/vim90/doc").glob("usr_[0-9]*.txt")):
        sections = re.split(r"\n={20,}\n", path.read_text(encoding="utf-8", errors="replace"))
        for i, section in enumerate(sections[1:], start=1):  # [0]: the chapter's table
            section = section.split("\n vim:")[0]
            yield record("vim_manual", "prose", path.name, f"{path.stem}#{i}", section)


def _signature(node: ast.FunctionDef | ast.AsyncFunctionDef) -> str:
    return f"def {node.name}({ast.unparse(node.args)})"


def _docstring_page(path: Path) -> str:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    parts = [ast.get_docstring(tree) or ""]
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            doc = ast.get_docstring(node)
            if not doc or node.name.startswith("_"):
                continue
            head = f"class {node.name}" if isinstance(node, ast.ClassDef) else _signature(node)
            parts.append(f"{head}\n\n{doc}")
    return "\n\n".join(p for p in parts if p)


def python_docstrings() -> Iterator[dict]:
    for pkg in DOCSTRING_PACKAGES:
        for path in sorted((SITE / pkg).rglob("*.py")):
            if "test" in path.parts or "models" in path.parts:
                continue
            try:
                text = _docstring_page(path)
            except (SyntaxError, UnicodeDecodeError):
                continue
            rel = path.relative_to(SITE).as_posix()
            yield record("python_docstrings", "reference", rel, rel, text)


def stdlib_docstrings() -> Iterator[dict]:
    for path in sorted(STDLIB.rglob("*.py")):
        rel = path.relative_to(STDLIB)
        if STDLIB_SKIP & set(rel.parts) or rel.parts[0].startswith(("config-", "_")):
            continue
        try:
            text = _docstring_page(path)
        except (SyntaxError, UnicodeDecodeError):
            continue
        r = record("stdlib_docstrings", "reference", rel.as_posix(), rel.as_posix(), text)
        yield {**r, "split": "docs_heldout"}


def cmake_reference() -> Iterator[dict]:
    for path in sorted(Path("/usr/share/cmake-3.25/Help/command").glob("*.rst")):
        yield record("cmake_help", "reference", path.name, path.stem, path.read_text())


def nodejs_api() -> Iterator[dict]:
    for path in sorted(Path("/usr/share/doc/nodejs/api").glob("*.md")):
        text = re.sub(r"<!--.*?-->", "", path.read_text(encoding="utf-8"), flags=re.S)
        for i, section in enumerate(re.split(r"\n(?=## )", text)):
            yield record("nodejs_api", "code", path.name, f"{path.stem}#{i}", section)


def _minhash(text: str) -> MinHash:
    m = MinHash(num_perm=64, seed=1)
    words = text.lower().split()
    for i in range(max(1, len(words) - 4)):
        m.update(" ".join(words[i : i + 5]).encode())
    return m


def licences() -> Iterator[dict]:
    paths = sorted(p for p in Path("/usr/share/common-licenses").iterdir() if not p.is_symlink())
    paths += sorted(SITE.glob("*.dist-info/LICEN[CS]E*")) + sorted(
        SITE.glob("*.dist-info/COPYING*")
    )
    # Licence texts only: AUTHORS and NOTICE files are lists of names, not a genre of prose.
    paths += sorted(
        p
        for p in SITE.glob("*.dist-info/licenses/*")
        if p.name.upper().startswith(("LICEN", "COPYING"))
    )
    seen: list[MinHash] = []
    for path in paths:
        if not path.is_file():
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        m = _minhash(text)
        # One of each licence: MIT files differing only in the holder's name are one text.
        if any(m.jaccard(s) >= 0.5 for s in seen):
            continue
        seen.append(m)
        common = "common-licenses" in str(path)
        key = path.name if common else path.relative_to(SITE).as_posix()
        group = path.name if common else key.split("-")[0]  # the package
        yield record("licences", "licence", group, key, text)


def plays() -> Iterator[dict]:
    for path in sorted(Path("data/raw/shakespeare").glob("*.txt")):
        scenes = re.split(r"\n(?=SCENE [IVX]+\.)", path.read_text(encoding="utf-8"))
        for i, scene in enumerate(scenes[1:], start=1):
            yield record("shakespeare", "dialogue", path.stem, f"{path.stem}#{i}", scene)


def fit(text: str) -> str | None:
    """Records outside the size range: too short are skipped, too long are cut at a paragraph."""
    if len(text) < MIN_CHARS:
        return None
    if len(text) <= MAX_CHARS:
        return text
    cut = text.rfind("\n\n", 0, MAX_CHARS)
    return text[: cut if cut > MIN_CHARS else MAX_CHARS]


TARGETS = {
    "clean": (OUT, (vim_manual, python_docstrings, cmake_reference, nodejs_api, licences, plays)),
    "docs_heldout": (DOCS_HELDOUT, (stdlib_docstrings,)),
}


def build(builders: tuple) -> list[dict]:
    rows, seen = [], set()
    for build in builders:
        candidates = []
        for r in build():
            text = fit(r["text"])
            if text and h(text) not in seen:  # a text repeated in the sources counts once
                seen.add(h(text))
                candidates.append({**r, "text": text})
        candidates.sort(key=lambda r: h(r["id"]))
        rows += sorted(candidates[:PER_SOURCE], key=lambda r: r["id"])
    assert len({r["id"] for r in rows}) == len(rows), "record ids must be unique"
    return rows


def main() -> None:
    names = sys.argv[1:] or list(TARGETS)
    for name in names:
        out, builders = TARGETS[name]
        rows = build(builders)
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
        print(f"{len(rows)} records, {out.stat().st_size / 2**20:.2f} MiB -> {out}")


if __name__ == "__main__":
    main()
