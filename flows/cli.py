"""`llmops`: the command line. Thin: parses arguments and calls components or flows."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import get_args

from components.config import Profile

PROFILES = get_args(Profile)


def _project_environment(root: Path) -> None:
    """Pin the project root for this process and its children (`dvc repro` -> `llmops stage`),
    and keep Prefect's state in the project so `llmops ui` shows the flow runs of `llmops run`.

    Must run before anything imports prefect: Prefect reads PREFECT_HOME once, on import.
    """
    from components.constants import ENV_PROJECT_DIR
    from components.tracking.mlflow_env import apply_retry_budget

    os.environ[ENV_PROJECT_DIR] = str(root)
    os.environ.setdefault("PREFECT_HOME", str(root / ".prefect"))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # servers may be offline
    # Fail fast on an outage: bounded HTTP retries for MLflow (budget in mlflow_env) and the
    # Prefect API client (2 retries instead of 5, exponential backoff with jitter).
    apply_retry_budget()
    os.environ.setdefault("PREFECT_CLIENT_MAX_RETRIES", "2")
    # Prefect's ephemeral API server gets 20 s to start by default, which busy cores (e.g. a
    # training run beside it) exceed: a start-up failure is not an outage worth failing on.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")


def _kv(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"expected key=value, got {pair!r}")
        out[key] = value
    return out


def cmd_stage(args: argparse.Namespace) -> None:
    """Run one stage (what `dvc repro` runs).

    Exits EXIT_TRANSIENT (75) when the failure is worth a retry (decided by exception type,
    components/failures.py), 1 on any other failure; the flow reads the code from the stage
    report, since `dvc repro` does not pass it on."""
    _run_stage(args)


def _run_stage(args: argparse.Namespace) -> None:
    from components.config import load_params
    from components.constants import EXIT_TRANSIENT
    from components.failures import exit_code, outage_message
    from components.stage import run_stage
    from components.tracking import mlflow_env
    from flows import stage_report
    from flows.stage_report import StageReport

    try:
        params_file = Path(args.params)
        result = run_stage(args.name, load_params(params_file), _kv(args.paths), params_file)
    except Exception as err:
        code = exit_code(err)
        what = f"{type(err).__name__}: {err}"
        if code == EXIT_TRANSIENT:
            what = f"{what}\n{outage_message(mlflow_env.tracking_uri(args.root), err)}"
        stage_report.write(StageReport(args.name, code, what[:2000]))
        log = logging.getLogger("llmops")
        # DVC deleted the stage's outputs before running it; its cache still holds them.
        log.error(
            "stage %s failed; its previous outputs (as dvc.lock records them) are in DVC's "
            "cache: `dvc checkout %s` restores them",
            args.name,
            args.name,
        )
        if code != EXIT_TRANSIENT:
            raise  # unchanged: its message and traceback say what is wrong
        log.error("%s", what)
        log.error("stage %s failed transiently; exit code %d asks to retry it", args.name, code)
        sys.exit(code)
    stage_report.write(StageReport(args.name, 0))
    for k, v in result.metrics.items():
        print(f"{args.name}.{k} = {v}")


def cmd_run(args: argparse.Namespace) -> None:
    """With --set or --profile the run happens in its own workspace and becomes a DVC
    experiment (flows/workspace.py); without, it runs here."""
    from flows.dvc_stage import UnknownStages, upstream_closure
    from flows.pipeline import llm_pipeline

    if args.stages:
        try:  # before Prefect starts: a typo is a one-line message, not two tracebacks
            upstream_closure(args.root, args.stages)
        except UnknownStages as err:
            sys.exit(f"llmops: {err}")
    llm_pipeline(
        stages=args.stages or None,
        profile=args.profile,
        overrides=_kv(args.set) or None,
        force=args.force,
        project_dir=str(args.root),
    )


def cmd_params(args: argparse.Namespace) -> None:
    from flows.params_overlay import apply_profile, set_params

    if args.action == "apply":
        changed = apply_profile(args.profile, Path(args.params))
    else:
        changed = set_params(_kv(args.set), Path(args.params))
    for key, (old, new) in changed.items():
        print(f"{key}: {old!r} -> {new!r}")


def cmd_reproduce(args: argparse.Namespace) -> None:
    """Exits 0 when the rebuild matches, 1 on a mismatch, with a message when it cannot run."""
    from components.config import load_params
    from components.tracking import mlflow_env
    from flows.reproduce import reproduce, write_report

    cfg = load_params(args.params).reproduce
    mlflow_env.configure(args.root)
    result = reproduce(args.root, args.model_uri, cfg, pull=args.pull, register=args.register)
    print(result.markdown())
    json_path, md_path = write_report(args.root, result)
    print(f"report: {md_path} and {json_path.name}")
    if not result.ok:
        sys.exit(1)


def cmd_serve(args: argparse.Namespace) -> None:
    from components.config import load_params
    from components.serving.deploy import Reads, serve_forever

    params = Reads.narrow(load_params(args.params))
    if args.variant:
        params = params.model_copy(
            update={"deploy": params.deploy.model_copy(update={"variant": args.variant})}
        )
    if args.canary or params.deploy.canary.enabled:
        _serve_canary(params.deploy, args.canary_prompts, hold=True)
        return
    sys.exit(serve_forever(params, args.model_uri))


CANARY_PROMPTS_HELP = (
    "the prompt set the canary window replays (default: dvc.yaml's canary_prompts)"
)


def cmd_canary(args: argparse.Namespace) -> None:
    from components.config import load_params
    from components.serving.deploy import Reads

    _serve_canary(Reads.narrow(load_params(args.params)).deploy, args.canary_prompts, hold=False)


def _serve_canary(cfg, prompts: str | None, *, hold: bool) -> None:
    import tempfile

    from components.project import dvc_paths, project_root
    from components.serving.canary import serve_canary

    root = project_root()
    paths = dvc_paths(root)
    eval_set = root / paths["tasks"] / "eval.jsonl"  # the tasks stage's (lm-eval per version)
    with tempfile.TemporaryDirectory(prefix="llmops-canary-") as tmp:
        entry = serve_canary(
            cfg,
            root / (prompts or paths["canary_prompts"]),
            eval_set if eval_set.exists() else None,
            Path(tmp),
            hold=hold,
        )
    print(f"canary {entry['verdict']}: {entry['reason']}")


def cmd_route(args: argparse.Namespace) -> None:
    import yaml

    from components.config import load_params
    from components.serving import httproute

    cfg = load_params(args.params).deploy
    route = httproute.render(cfg, args.champion, args.challenger, namespace=args.namespace)
    text = yaml.safe_dump(route, sort_keys=False)
    if args.out:
        Path(args.out).write_text(text)
        print(f"wrote {args.out} (HTTPRoute, schema-checked)")
    else:
        print(text, end="")


def cmd_rollback(args: argparse.Namespace) -> None:
    from components.registry.rollback import rollback

    done = rollback(reason=args.reason, to=args.to)
    print(
        f"champion: version {done.from_version} -> {done.to_version} "
        f"(audit record: MLflow run {done.run_id})"
    )


def cmd_lineage(args: argparse.Namespace) -> None:
    import json
    from dataclasses import asdict

    from mlflow import MlflowClient
    from rich.console import Console

    from components.tracking import mlflow_env, trace, trace_view
    from components.tracking.lineage_record import LineageNotRecorded

    if bool(args.uri) == bool(args.doc):
        sys.exit("llmops lineage: give a model URI (models:/NAME/VERSION or @ALIAS) or --doc ID")
    # Each recorded artifact is a few bytes: MLflow's download bars would bury the answer.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    mlflow_env.configure()
    client = MlflowClient()
    console = Console() if sys.stdout.isatty() else Console(width=140)
    try:
        if args.doc:
            hits = trace.versions_with_document(client, args.doc, args.root)
            if args.json:
                print(json.dumps([asdict(h) for h in hits], indent=2))
            else:
                console.print(trace_view.hits_table(args.doc, hits))
            return
        chain = trace.trace(client, args.uri, args.root)
    except (trace.LineageError, LineageNotRecorded) as err:
        sys.exit(f"llmops lineage: {err}")
    if args.json:
        print(json.dumps([v.to_dict() for v in chain], indent=2))
    else:
        console.print(trace_view.chain_tree(chain))


def cmd_plan(args: argparse.Namespace) -> None:
    import json

    from components.training.planner import format_plan
    from components.training.sizing import plan_for
    from flows.params_overlay import preview_params

    params = preview_params(Path(args.params), args.profile, _kv(args.set))
    tokenizer = Path(args.tokenizer) if args.tokenizer else None
    plan = plan_for(
        params,
        tokenizer,
        precision=args.precision,
        preset=args.model,
        n_params=args.params_billions * 1e9 if args.params_billions else None,
        tokens=args.tokens,
    )
    print(json.dumps(plan.to_dict(), indent=2) if args.json else format_plan(plan))


def cmd_launch(args: argparse.Namespace) -> None:
    import json

    import yaml

    from components.project import dvc_paths
    from components.training import launch
    from components.training.pretrain import assemble_launch
    from flows.params_overlay import preview_params

    overrides = _kv(args.set)
    if args.hosts:
        overrides["cluster.hosts"] = json.dumps(args.hosts.split(","))
    cluster_run = None
    if args.from_terraform:
        from flows.cluster_launch import from_terraform

        cluster_run = from_terraform(
            Path(args.from_terraform),
            Path(args.params),
            args.profile,
            check=not args.skip_service_check,
        )
        overrides = {**cluster_run.overrides, **overrides}  # an explicit --set wins
    params = preview_params(Path(args.params), args.profile, overrides)
    paths = dvc_paths(args.root)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    # The ranks read these params (the profile and overrides applied), not the live file.
    params_file = out / "params.yaml"
    params_file.write_text(yaml.safe_dump(params.model_dump(mode="json"), sort_keys=False))
    ranks = assemble_launch(
        params,
        data=Path(paths["packed"]),
        tokenizer=Path(paths["tokenizer"]),
        init=Path(paths["init"]),
        params_file=params_file,
        checkpoints=Path(paths["ckpt"]),
        out=Path(paths["base"]),
        ds_config_path=out / "ds_config.json",
        device=args.device,
    )
    print(ranks.stage.reason)
    files = launch.render(
        ranks.params.cluster,
        json.dumps(ranks.ds_config, indent=2),
        ranks.worker_args,
        out,
        extra_env=cluster_run.env if cluster_run else None,
    )
    if cluster_run:
        files.update(cluster_run.write(out))
    for name, path in files.items():
        print(f"{name:<10} {path}")


def cmd_summary(args: argparse.Namespace) -> None:
    from rich.console import Console

    from components.evaluation.summary import summary
    from components.project import dvc_paths

    paths = dvc_paths(args.root)
    # Piped (make, CI logs) rich assumes 80 columns and wraps a table of five models.
    console = Console() if sys.stdout.isatty() else Console(width=140)
    console.print(summary(args.root / paths["reports"], args.root / paths["metrics"]))


def cmd_dag(args: argparse.Namespace) -> None:
    from flows.dag import drift

    dvc_yaml = Path(args.root).resolve() / "dvc.yaml"
    found = drift(dvc_yaml.parent)
    for line in found.errors + found.differences:
        print(line)
    if args.write and found.differences:
        dvc_yaml.write_text(found.text)
        print(f"rewrote {dvc_yaml} from the declarations ({len(found.differences)} differences)")
    elif not found.differences and not found.errors:
        print("dvc.yaml matches what the stages declare")
    if found.errors or (args.check and found.differences):
        sys.exit(1)


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
    r.add_argument(
        "--profile",
        choices=PROFILES,
        help="run with a scale profile, in an isolated workspace saved as a DVC experiment "
        "(params.yaml is not changed)",
    )
    r.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="key=value",
        help="override a param (e.g. pretrain.max_steps=100), in an isolated workspace saved as "
        "a DVC experiment (params.yaml is not changed)",
    )
    r.add_argument("--stages", nargs="*", help="only these stages (and what they need)")
    r.add_argument("--force", action="store_true", help="re-run stages even if up to date")
    r.set_defaults(func=cmd_run)

    rp = sub.add_parser(
        "reproduce",
        help="rebuild a registered model from its recorded commit and params and compare",
    )
    rp.add_argument("model_uri", help="models:/NAME/VERSION or models:/NAME@ALIAS")
    rp.add_argument(
        "--pull",
        action="store_true",
        help="fetch inputs missing from the DVC cache from the remote",
    )
    rp.add_argument(
        "--register",
        action="store_true",
        help="when the rebuild matches, register it as a new version tagged reproduction_of",
    )
    rp.set_defaults(func=cmd_reproduce)

    pa = sub.add_parser("params", help="apply a scale profile or set values in params.yaml")
    pa_sub = pa.add_subparsers(dest="action", required=True)
    ap = pa_sub.add_parser("apply", help="write a profile's values (`profiles:` in params.yaml)")
    ap.add_argument("profile", choices=PROFILES)
    st = pa_sub.add_parser("set", help="set key=value pairs")
    st.add_argument("set", nargs="+", metavar="key=value")
    pa.set_defaults(func=cmd_params)

    sv = sub.add_parser("serve", help="serve the champion model with vLLM until interrupted")
    sv.add_argument(
        "--model-uri",
        default=None,
        help="a registry URI to serve instead of the champion (e.g. models:/llmops-policy/3)",
    )
    sv.add_argument(
        "--variant",
        choices=("fp", "int8", "int4"),
        help="the champion's registered form to serve (default: deploy.variant)",
    )
    sv.add_argument(
        "--canary",
        action="store_true",
        help="serve champion and challenger behind the LiteLLM gateway (deploy.canary.weights), "
        "replay the canary window, decide (promote or roll back, audited), then serve on with "
        "the decided weights",
    )
    sv.add_argument("--canary-prompts", default=None, help=CANARY_PROMPTS_HELP)
    sv.set_defaults(func=cmd_serve)

    cn = sub.add_parser(
        "canary",
        help="one bounded canary: champion and challenger behind the gateway for the window, "
        "then promote or roll back (audited) and stop",
        description="What `llmops serve --canary` does before it serves on: both versions served "
        "by vLLM behind the LiteLLM gateway at deploy.canary.weights, the window "
        "(deploy.canary.window_requests / window_minutes) replayed to 127.0.0.1, the "
        "per-version table, the decision applied to the registry with an audit record. "
        "Exits when decided.",
    )
    cn.add_argument("--canary-prompts", default=None, help=CANARY_PROMPTS_HELP)
    cn.set_defaults(func=cmd_canary)

    rt = sub.add_parser(
        "route",
        help="render the cluster canary: a Gateway API HTTPRoute with weighted backendRefs",
        description="The champion's and the challenger's Services weighted by "
        "deploy.canary.weights, checked against infra/k8s/httproute.schema.json. Example: "
        "llmops route --champion 3 --challenger 4 --out route.yaml && kubectl apply -f route.yaml",
    )
    rt.add_argument("--champion", required=True, metavar="VERSION")
    rt.add_argument("--challenger", required=True, metavar="VERSION")
    rt.add_argument("--namespace", default=None)
    rt.add_argument("--out", default=None, help="file to write (default: stdout)")
    rt.set_defaults(func=cmd_route)

    rb = sub.add_parser(
        "rollback",
        help="give `champion` back to the previous champion, with an audit record",
        description="Move the champion alias of llmops-policy back to the version that held it "
        "before (or to --to VERSION). The rolled-back version is not promoted again by the "
        "pipeline. Promotions are the promote stage's (`llmops run --stages promote`). "
        "Example: llmops rollback --reason 'regression in prod'",
    )
    rb.add_argument("--to", metavar="VERSION", help="the version to give champion to")
    rb.add_argument("--reason", default="", help="why (stored in the audit record)")
    rb.set_defaults(func=cmd_rollback)

    pl = sub.add_parser(
        "plan",
        help="size a pretraining run: parameters, tokens, FLOPs, GPU-hours, ZeRO memory",
        description="Size the configured pretraining run (or a hypothetical one) and pick the "
        "cheapest ZeRO stage / offload / activation checkpointing that fits. "
        "Example: llmops plan --model llama2-7b --params-billions 7 --tokens 140e9 "
        "--set cluster.ranks_per_node=8 --set cluster.accelerator_memory_gb=80",
    )
    pl.add_argument(
        "--profile",
        choices=PROFILES,
        help="plan for this profile (params.yaml is not changed)",
    )
    pl.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="key=value",
        help="what-if override, e.g. cluster.nodes=4 (params.yaml is not changed)",
    )
    pl.add_argument(
        "--model",
        choices=["llama2-7b", "llama2-70b", "mixtral-8x7b"],
        help="a published model shape instead of params.yaml's model",
    )
    pl.add_argument("--params-billions", type=float, help="round parameter count, e.g. 7")
    pl.add_argument("--tokens", type=float, help="token budget (default: the configured run's)")
    pl.add_argument(
        "--precision",
        choices=["mixed", "fp32"],
        default="mixed",
        help="mixed: bf16 + fp32 master weights (GPUs); fp32: this CPU",
    )
    pl.add_argument("--tokenizer", help="trained tokenizer dir for the exact vocabulary size")
    pl.add_argument("--json", action="store_true", help="print the plan as JSON")
    pl.set_defaults(func=cmd_plan)

    la = sub.add_parser("launch", help="render a multi-node pretraining launch")
    la_sub = la.add_subparsers(dest="action", required=True)
    lr = la_sub.add_parser(
        "render",
        help="write hostfile, .deepspeed_env, ds_config.json and launch.sh",
        description="Render what the pretrain stage would run on a cluster, for review or a "
        "manual run. Example: llmops launch render --profile cluster "
        "--hosts gpu-0,gpu-1 --out infra/launch/rendered, or after `terraform apply`: "
        "llmops launch render --from-terraform out.json --out launch/",
    )
    lr.add_argument("--out", required=True, help="output directory")
    lr.add_argument("--profile", choices=PROFILES, default="cluster")
    lr.add_argument("--set", action="append", default=[], metavar="key=value")
    lr.add_argument("--hosts", help="comma-separated node names (else cluster.hosts)")
    lr.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    lr.add_argument(
        "--from-terraform",
        metavar="OUT_JSON",
        help="`terraform output -json` of infra/terraform/aws: nodes, GPUs, hosts, EFA, "
        "MLflow/Prefect URIs and the DVC remote come from it",
    )
    lr.add_argument(
        "--skip-service-check",
        action="store_true",
        help="with --from-terraform: do not require MLflow and Prefect to answer (rendering "
        "from outside the VPC)",
    )
    la.set_defaults(func=cmd_launch)

    dg = sub.add_parser(
        "dag",
        help="check or rewrite dvc.yaml's params and code deps from the stages' declarations",
        description="Each stage's `Reads` (params sections) and the project files its module "
        "imports decide its `params:` and code `deps:` in dvc.yaml. Without a flag: show the "
        "differences. Example: llmops dag --write",
    )
    mode = dg.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="exit 1 if dvc.yaml differs")
    mode.add_argument("--write", action="store_true", help="rewrite dvc.yaml in place")
    dg.add_argument("--root", default=".", help="project root (default: %(default)s)")
    dg.set_defaults(func=cmd_dag)

    li = sub.add_parser(
        "lineage",
        help="what a registered model was built from, or which models were trained on a document",
        description="Answered from what was recorded when each version was registered (registry "
        "tags, the registering run's params, DVC's cache); no model weights are read. Examples: "
        "llmops lineage models:/llmops-policy@champion; llmops lineage --doc ID --json",
    )
    li.add_argument("uri", nargs="?", help="models:/NAME/VERSION or models:/NAME@ALIAS")
    li.add_argument("--doc", metavar="SOURCE_ID", help="every version trained on this document")
    li.add_argument("--json", action="store_true", help="print JSON instead of a tree/table")
    li.set_defaults(func=cmd_lineage)

    su = sub.add_parser(
        "summary",
        help="print the last run's task accuracy per model, the promotion decision and where "
        "the report is",
    )
    su.set_defaults(func=cmd_summary)

    ui = sub.add_parser("ui", help="start local Prefect and MLflow UI servers")
    ui.add_argument("--prefect-port", type=int, default=4200)
    ui.add_argument("--mlflow-port", type=int, default=5000)
    ui.set_defaults(func=cmd_ui)
    return p


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from components.project import ProjectNotFound, project_root

    try:
        args.root = project_root()
    except ProjectNotFound as err:
        sys.exit(f"llmops: {err}")
    _project_environment(args.root)
    if args.params == parser.get_default("params"):
        # The default params file is the project's, whatever the working directory.
        args.params = str(args.root / args.params)
    from components.config import ParamsError
    from components.failures import TrackingUnavailable
    from components.training.launch import LaunchError
    from flows.reproduce import ReproduceError
    from flows.workspace import WorkspaceError

    try:
        args.func(args)
    except (ParamsError, LaunchError, TrackingUnavailable, WorkspaceError, ReproduceError) as err:
        sys.exit(f"llmops: {err}")
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
