"""Shared test helpers: the project's params, with small overrides."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from components.config import Params, StageParams, load_params, parse_params
from components.stage import stage_reads

ROOT = Path(__file__).resolve().parents[1]


def project_params(**sections: dict[str, Any]) -> Params:
    """params.yaml with some section values replaced, e.g. project_params(curate={...}),
    validated by the schema like the file itself (a bad override fails here, not in a stage)."""
    raw = load_params(ROOT / "params.yaml").model_dump()
    for name, values in sections.items():
        raw[name] = {**raw[name], **values}
    return parse_params(raw, source=f"params.yaml with test overrides {sorted(sections)}")


# Curation blocks that judge natural-language quality switched off, so that toy documents reach
# the blocks a test is about (dedup, quarantine bookkeeping).
# The published C4 line rules and FineWeb's character-duplicates rule off: test documents are a
# few lines (abuse, leaked items, PII) that those rules would strip before the block under test
# sees them.
LINE_RULES_OFF: dict[str, Any] = {
    "c4_remove_citations": False,
    "c4_line_terminal_punct": False,
    "c4_line_min_words": None,
    "c4_filter_curly_bracket": False,
    "fineweb_char_duplicates_max": None,
}
TOY_CURATE: dict[str, Any] = {
    "languages": (),
    **LINE_RULES_OFF,
    "c4_min_sentences": None,
    "fineweb_line_punct_min": None,
    "fineweb_short_line_max": None,
    "fineweb_newline_ratio_max": None,
}


def stage_view(name: str, params: Params) -> StageParams:
    """The narrowed params a stage's `run` gets (what `llmops stage` passes)."""
    return stage_reads(name).narrow(params)


def write_task_files(out: Path) -> Path:
    """The task files as the `tasks` stage writes them (DVC outputs, not in git)."""
    from components.data import tasks

    params = tasks.Reads.narrow(project_params())
    tasks.run(params, tasks.Paths(ROOT / "data" / "raw", out, out / "tasks.json"), tracker=None)
    return out
