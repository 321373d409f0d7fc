"""python -m bench.curation: corpus -> our refinery -> DataTrove -> report (see __init__.py)."""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
from pathlib import Path

from bench.curation import blocks, corpus, datatrove_side, measure, ours, report
from bench.curation.corpus import EvalSets
from components.config import CurateParams, Params, load_params
from components.constants import EVAL_SET_FILES
from components.data import tasks
from components.data.documents import Doc

ROOT = Path(__file__).resolve().parents[2]
FULL_MIB = 100.0
RESULTS = ROOT / "bench" / "results"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m bench.curation",
        description="Documents/s per core of the data refinery, whole and per block, against "
        "DataTrove's equivalent blocks on the same synthetic corpus, in the same run. Needs "
        'the bench extra: pip install -e ".[bench]".',
    )
    ap.add_argument(
        "--mib",
        type=float,
        default=FULL_MIB,
        help=f"corpus size in MiB of UTF-8 text (default {FULL_MIB:g}: ~33k documents, about "
        "45 min). 1 MiB (~320 documents) takes about a minute and a half and is enough to check "
        "that a change keeps every decision: documents, kept and dropped counts are "
        "deterministic for a size, seed and params (python -m bench.curation.compare A B)",
    )
    ap.add_argument("--seed", type=int, help="corpus seed (default: params.yaml's seed)")
    ap.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    ap.add_argument(
        "--out",
        type=Path,
        help="results JSON (default: bench/results/curation.json at the full size, "
        "bench/results/curation-<MIB>mib.json otherwise, so that a small run never replaces "
        "the last full run's results)",
    )
    ap.add_argument("--no-pin", action="store_true", help="do not pin the process to one CPU")
    ap.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")
    return ap.parse_args(argv)


def task_files(params: Params, scratch: Path) -> Path:
    """The eval sets decontamination checks against: the `tasks` stage's output if it ran,
    else written the same way into `scratch` (they are DVC outputs, not in git)."""
    made = ROOT / "data" / "tasks"
    if all((made / name).exists() for name in EVAL_SET_FILES):
        return made
    reads = tasks.Reads.narrow(params)
    tasks.run(reads, tasks.Paths(ROOT / "data" / "raw", scratch, scratch / "tasks.json"), None)
    return scratch


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if importlib.util.find_spec("datatrove") is None:
        sys.exit('needs DataTrove: pip install -e ".[bench]"')
    core = None if args.no_pin else measure.pin_to_one_core()
    params = load_params(args.params)
    cfg, seed = params.curate, params.seed if args.seed is None else args.seed
    with tempfile.TemporaryDirectory(prefix="bench-curation-") as tmp:
        eval_sets, eval_info = corpus.load_eval(task_files(params, Path(tmp) / "tasks"))
        docs, corpus_info = corpus.build(params, ROOT / "data" / "raw", args.mib, seed, eval_sets)
        ours_result = run_ours(docs, cfg, eval_sets, seed)
        dt_result, dt_matched, skipped = run_datatrove(docs, cfg, eval_sets, Path(tmp))
    result = {
        "corpus": {**corpus_info, "eval_sets": eval_info},
        "cpu_count": os.cpu_count(),
        "pinned_core": core,
        "measure": report.MEASURE,
        "ours": ours_result,
        "datatrove": dt_result,
        "datatrove_rules_matched": dt_matched,
        "ratios": report.ratios(ours_result, dt_result),
        "mapping": blocks.mapping(cfg),
        "datatrove_setup": datatrove_side.setup_info(),
        "skipped": skipped,
    }
    out = args.out or RESULTS / (
        "curation.json" if args.mib == FULL_MIB else f"curation-{args.mib:g}mib.json"
    )
    report.write(result, out)
    report.print_table(result)
    print(f"results: {out}")
    if not args.no_mlflow:
        report.log_to_mlflow(result, out)


def run_ours(docs: list[Doc], cfg: CurateParams, eval_sets: EvalSets, seed: int) -> dict:
    ours.warm_up()
    result = {"blocks": ours.blocks(docs, cfg, eval_sets, seed)}
    result["whole"] = ours.whole(docs, cfg, eval_sets, seed)
    result["common_chain"] = ours.common_chain(docs, cfg, eval_sets, blocks.common_names(cfg))
    return result


def run_datatrove(
    docs: list[Doc], cfg: CurateParams, eval_sets: EvalSets, work: Path
) -> tuple[dict, dict, dict[str, str]]:
    """(DataTrove's blocks and chain, its rules-matched re-run, blocks not compared and why)."""
    offline = datatrove_side.prepare(eval_sets, cfg.decontam_ngram or 13, work)
    factories, unavailable = blocks.datatrove_factories(cfg, offline)
    matched, _ = blocks.datatrove_factories(cfg, offline, matched=True)
    each = datatrove_side.blocks(docs, factories)
    rules_matched = {"blocks": datatrove_side.blocks(docs, matched)}
    chain = datatrove_side.chain(docs, factories)
    result = {"whole": chain, "blocks": each, "decont_index_hashes": offline.decont_index_hashes}
    return result, rules_matched, {**blocks.skipped(cfg), **unavailable}


if __name__ == "__main__":
    main()
