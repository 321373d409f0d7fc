"""`llmops`: the command line. Thin: parses arguments and calls components or flows."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # no internet here


def _kv(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"expected key=value, got {pair!r}")
        out[key] = value
    return out


def cmd_stage(args: argparse.Namespace) -> None:
    from components.config import load_params
    from components.stage import run_stage

    result = run_stage(args.name, load_params(args.params), _kv(args.paths))
    for k, v in result.metrics.items():
        print(f"{args.name}.{k} = {v}")


def cmd_run(args: argparse.Namespace) -> None:
    from flows.pipeline import llm_pipeline

    llm_pipeline(stages=args.stages or None, profile=args.profile,
                 overrides=_kv(args.set) or None, force=args.force)


def cmd_params(args: argparse.Namespace) -> None:
    from flows.params_overlay import apply_profile, set_params

    if args.action == "apply":
        changed = apply_profile(args.profile, Path(args.params))
    else:
        changed = set_params(_kv(args.set), Path(args.params))
    for key, (old, new) in changed.items():
        print(f"{key}: {old!r} -> {new!r}")


def cmd_serve(args: argparse.Namespace) -> None:
    from components.config import load_params
    from components.serving.deploy import serve_forever

    sys.exit(serve_forever(load_params(args.params), args.model_uri))


def cmd_ui(args: argparse.Namespace) -> None:
    from flows.servers import run_ui_servers

    run_ui_servers(prefect_port=args.prefect_port, mlflow_port=args.mlflow_port)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="llmops", description=__doc__)
    p.add_argument("--params", default="params.yaml", help="params file (default: %(default)s)")
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("stage", help="run one pipeline stage (what dvc.yaml calls)")
    s.add_argument("name", help="stage name, e.g. pretrain")
    s.add_argument("paths", nargs="*", metavar="key=path", help="the stage's paths from dvc.yaml")
    s.set_defaults(func=cmd_stage)

    r = sub.add_parser("run", help="run the llm-pipeline Prefect flow (DVC decides what is stale)")
    r.add_argument("--profile", choices=["smoke", "demo", "cluster"],
                   help="apply a scale profile to params.yaml first")
    r.add_argument("--set", action="append", default=[], metavar="key=value",
                   help="override a param (e.g. pretrain.max_steps=100); recorded as a DVC "
                        "experiment")
    r.add_argument("--stages", nargs="*", help="only these stages (and what they need)")
    r.add_argument("--force", action="store_true", help="re-run stages even if up to date")
    r.set_defaults(func=cmd_run)

    pa = sub.add_parser("params", help="apply a scale profile or set values in params.yaml")
    pa_sub = pa.add_subparsers(dest="action", required=True)
    ap = pa_sub.add_parser("apply", help="write a profile's values (configs/profiles/NAME.yaml)")
    ap.add_argument("profile", choices=["smoke", "demo", "cluster"])
    st = pa_sub.add_parser("set", help="set key=value pairs")
    st.add_argument("set", nargs="+", metavar="key=value")
    pa.set_defaults(func=cmd_params)

    sv = sub.add_parser("serve", help="serve the champion model with vLLM until interrupted")
    sv.add_argument("--model-uri", default="models:/llmops-policy@champion")
    sv.set_defaults(func=cmd_serve)

    ui = sub.add_parser("ui", help="start local Prefect and MLflow UI servers")
    ui.add_argument("--prefect-port", type=int, default=4200)
    ui.add_argument("--mlflow-port", type=int, default=5000)
    ui.set_defaults(func=cmd_ui)
    return p


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from components.config import ParamsError

    try:
        args.func(args)
    except ParamsError as err:
        sys.exit(f"llmops: {err}")
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
