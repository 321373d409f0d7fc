"""`llmops dag`: dvc.yaml's `params:` and code `deps:` follow from what each stage declares.

A stage's params are the sections of its `Reads`; its code deps are the project files its
module imports, directly or not, plus those of the stage runner every stage goes through
(`components/stage.py`). Imports are read from the source (anywhere in a file, lazy ones
included), so editing any code a stage can run makes the stage stale in `dvc status`.
Data deps (paths) stay as written in dvc.yaml: paths live there only. A stage whose code
imports another stage's module is an error: editing one stage would make the other stale.
"""

from __future__ import annotations

import ast
import io
from dataclasses import dataclass
from pathlib import Path

from ruamel.yaml import YAML

from components.stage import STAGE_MODULES, stage_reads

PACKAGE = "components"  # the code a stage runs; flows/ only orchestrates
RUNNER = "components.stage"


@dataclass(frozen=True)
class Declared:
    params: list[str]
    code: list[str]  # paths relative to the project root, sorted


def _module_path(root: Path, module: str) -> Path | None:
    base = root.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imported_names(path: Path, module: str) -> set[str]:
    """Every module name an import statement in `path` may load (relative ones resolved)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            names.add(base)
            # `from pkg import mod` loads the submodule `pkg.mod` when there is one.
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def _has_code(init: Path) -> bool:
    """An `__init__.py` with more than a docstring (those run on every import below them)."""
    body = ast.parse(init.read_text()).body
    return any(not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)) for n in body)


def import_closure(root: Path, module: str) -> set[Path]:
    """Project files loaded by importing `module`, following imports inside `PACKAGE`."""
    seen: set[Path] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        parts = name.split(".")
        if parts[0] != PACKAGE:
            continue
        # Importing a.b.c runs a/__init__.py and a/b/__init__.py first.
        for i in range(1, len(parts)):
            init = _module_path(root, ".".join(parts[:i]))
            if init is not None and init.name == "__init__.py" and _has_code(init):
                seen.add(init)
        path = _module_path(root, name)
        if path is None or path in seen:
            continue
        if path.name != "__init__.py" or _has_code(path):
            seen.add(path)
        todo.extend(_imported_names(path, name))
    return seen


def stage_imports(root: Path) -> list[str]:
    """Every import of one stage's module by the code another stage runs, named by importer and
    imported module: through such an import, editing one stage's code makes the other stale
    (what two stages share belongs on the ground floor, e.g. components/registry/champion.py)."""
    modules = {
        path: (stage, module)
        for stage, module in STAGE_MODULES.items()
        if (path := _module_path(root, module)) is not None
    }
    errors = []
    for stage, module in sorted(STAGE_MODULES.items()):
        for path in sorted(import_closure(root, module)):
            importer = ".".join(path.relative_to(root).with_suffix("").parts)
            for name in sorted(_imported_names(path, importer)):
                target = _module_path(root, name)
                if target in modules and modules[target][0] != stage:
                    other, imported = modules[target]
                    errors.append(
                        f"stage {stage!r} runs {importer}, which imports {imported} (the module "
                        f"of stage {other!r}): move what they share to a module no stage runs "
                        "as its own"
                    )
    return sorted(set(errors))


def declared(root: Path, stage: str) -> Declared:
    files = import_closure(root, STAGE_MODULES[stage]) | import_closure(root, RUNNER)
    return Declared(
        params=list(stage_reads(stage).sections()),
        code=sorted(p.relative_to(root).as_posix() for p in files),
    )


def _is_code(dep: object) -> bool:
    return isinstance(dep, str) and dep.endswith(".py")


def _yaml() -> YAML:
    y = YAML()
    y.preserve_quotes = True
    y.width = 100
    y.indent(mapping=2, sequence=4, offset=2)
    return y


def render(root: Path) -> tuple[str, list[str]]:
    """dvc.yaml's text with every stage's params and code deps as declared, and the errors
    that generation cannot fix (stages without a module, modules without a stage)."""
    y = _yaml()
    doc = y.load((root / "dvc.yaml").read_text())
    stages = doc["stages"]
    errors = [
        f"dvc.yaml stage {s!r} has no module in STAGE_MODULES"
        for s in stages
        if s not in STAGE_MODULES
    ]
    errors += [
        f"stage {s!r} ({m}) is missing from dvc.yaml"
        for s, m in STAGE_MODULES.items()
        if s not in stages
    ]
    errors += stage_imports(root)
    for name, stage in stages.items():
        if name not in STAGE_MODULES:
            continue
        want = declared(root, name)
        deps = stage.setdefault("deps", [])
        for i in reversed(range(len(deps))):
            if _is_code(deps[i]):
                del deps[i]
        deps.extend(want.code)
        if "params" in stage:
            stage["params"] = want.params
        else:  # right after deps, where a reader looks for it
            stage.insert(list(stage).index("deps") + 1, "params", want.params)
    buf = io.StringIO()
    y.dump(doc, buf)
    return buf.getvalue(), errors


@dataclass(frozen=True)
class Drift:
    text: str  # dvc.yaml as generated
    differences: list[str]  # what --write fixes
    errors: list[str]  # what it cannot (a stage and its module must be added by hand)


def drift(root: Path) -> Drift:
    text, errors = render(root)
    current = (root / "dvc.yaml").read_text()
    old, new = _per_stage(current), _per_stage(text)
    differences = []
    for stage in sorted(set(old) & set(new)):
        (old_params, old_code), (new_params, new_code) = old[stage], new[stage]
        if old_params != new_params:
            differences.append(f"{stage}: params {old_params} -> declared {new_params}")
        differences += [f"{stage}: code dep missing: {p}" for p in sorted(new_code - old_code)]
        differences += [f"{stage}: code dep not imported: {p}" for p in sorted(old_code - new_code)]
    if text != current and not differences:
        differences.append("dvc.yaml differs from its generated form (order or formatting)")
    return Drift(text, differences, errors)


def _per_stage(text: str) -> dict[str, tuple[list, set[str]]]:
    stages = YAML(typ="safe").load(text)["stages"]
    return {
        name: (list(s.get("params") or []), {d for d in s.get("deps") or [] if _is_code(d)})
        for name, s in stages.items()
    }
