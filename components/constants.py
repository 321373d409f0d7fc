"""Names shared across stages: registered models, lineage tags, aliases, environment variables.

Stages are coupled only through files declared in dvc.yaml and through the MLflow registry; the
names used for the registry live here so no stage spells them on its own.
"""

from typing import Final

EXPERIMENT: Final = "llmops"

# Registered model names.
MODEL_BASE: Final = "llmops-base"
MODEL_SFT: Final = "llmops-sft"
MODEL_REWARD: Final = "llmops-reward"
MODEL_POLICY: Final = "llmops-policy"
MODEL_POLICY_INT8: Final = "llmops-policy-int8"
MODEL_POLICY_INT4: Final = "llmops-policy-int4"
# LoRA / QLoRA adapters (sft.lora, align.lora): the adapter files alone, beside the merged model
# registered under MODEL_SFT / MODEL_POLICY (components/training/adapters.py).
MODEL_SFT_ADAPTER: Final = "llmops-sft-adapter"
MODEL_POLICY_ADAPTER: Final = "llmops-policy-adapter"

# The evaluate stage's name of the model the promote gates judge (its rows in
# reports/predictions.jsonl, its numbers under the plain metric keys).
EVAL_CHALLENGER: Final = "policy"

# Aliases: the final model is the challenger; the served model holds champion.
ALIAS_CHALLENGER: Final = "challenger"
ALIAS_CHAMPION: Final = "champion"

# Lineage tags carried by every registered model version.
TAG_GIT_COMMIT: Final = "git_commit"
TAG_DATA_HASH: Final = "data_hash"
TAG_PARAMS_HASH: Final = "params_hash"
TAG_PARENT_MODEL: Final = "parent_model"
TAG_STAGE: Final = "stage"
# On a policy trained with the reward model's scores (RL): `name/version` of that reward model.
TAG_REWARD_MODEL: Final = "reward_model"
# On an adapter version: `name/version` of the exact base model it must be loaded onto.
TAG_ADAPTER_BASE: Final = "adapter_base"
# On a merged model version: `name/version` of the adapter version folded into its base.
TAG_MERGED_FROM: Final = "merged_from"
# On both: how the adapter was trained, `lora` or `qlora` (4-bit NF4 base).
TAG_ADAPTER: Final = "adapter"
# The checkpoint a model was trained from (model.init, components/modeling/checkpoint.py): its
# resolved origin (path, hub id@commit, models:/name/version; `scratch` when built from params)
# and the content hash of its files. Carried from parent to child, so every version trained from
# a checkpoint names it.
TAG_INIT_ORIGIN: Final = "init_origin"
TAG_INIT_HASH: Final = "init_hash"
INIT_TAGS: Final = (TAG_INIT_ORIGIN, TAG_INIT_HASH)
LINEAGE_TAGS: Final = (TAG_GIT_COMMIT, TAG_DATA_HASH, TAG_PARAMS_HASH, TAG_PARENT_MODEL, TAG_STAGE)
# Content hash of the registered model directory (its files, the registry record excluded):
# the identity of the weights, by which a downstream stage finds its parent's version and a
# re-registration of identical weights and lineage finds the version it would duplicate.
TAG_MODEL_HASH: Final = "model_hash"
# Lineage that must match, with the model hash, for an existing version to be reused. The git
# commit is left out: the same weights from the same data, params and parent are the same model
# whichever commit (e.g. a README change) re-ran the stage.
REUSE_KEYS: Final = (TAG_DATA_HASH, TAG_PARAMS_HASH, TAG_PARENT_MODEL, TAG_STAGE)
# The DVC experiment a version was trained in ("" for a run in the user's workspace): an isolated
# run (flows/workspace.py) sets ENV_EXPERIMENT for the stages it starts; their MLflow runs and
# the versions they register carry it as TAG_EXPERIMENT.
ENV_EXPERIMENT: Final = "LLMOPS_EXPERIMENT"
TAG_EXPERIMENT: Final = "experiment"
# Artifacts of the run that registered a version (components/tracking/lineage_record.py): the
# whole params file the stage ran with (params_hash covers only the sections it read, and a hash
# cannot be read back), and the document count per curated source of its training corpus.
ARTIFACT_PARAMS: Final = "lineage/params.yaml"
ARTIFACT_SOURCES: Final = "lineage/sources.json"

# On a policy version the promote stage judged: `eval.<metric>` = its value, as the gates saw it.
EVAL_TAG_PREFIX: Final = "eval."

# On a version registered by `llmops reproduce --register`: `name/version` of what it rebuilt.
TAG_REPRODUCTION_OF: Final = "reproduction_of"

# Run tags used to find a stage's MLflow run from the flow.
RUN_TAG_STAGE: Final = "llmops.stage"
RUN_TAG_PIPELINE: Final = "llmops.pipeline_run"
# On the report stage's run: `name/version` of the challenger it reports on (lineage finds the
# contamination of the eval sets by it).
RUN_TAG_REPORT_OF: Final = "llmops.report_of"

# Written into a model directory so downstream stages know which registry version they start
# from (their parent_model lineage tag). Listed in .dvcignore: it holds registry ids, so it must
# not be part of the directory's DVC hash (a rerun would change every downstream stage's deps);
# where DVC restores the directory without it, the version is found by TAG_MODEL_HASH.
REGISTRY_RECORD: Final = "registered_model.json"

# Written by the checkpoint stage into its output (models/init): what model.init resolved to.
CHECKPOINT_RECORD: Final = "checkpoint.json"

# Environment: set by the flow so every stage's run nests under the pipeline's parent run.
ENV_PARENT_RUN_ID: Final = "LLMOPS_PARENT_RUN_ID"
ENV_SERVE_PYTHON: Final = "LLMOPS_SERVE_PYTHON"
# The interpreter of the LiteLLM gateway (.venv-gateway: its pins clash with the project's).
ENV_GATEWAY_PYTHON: Final = "LLMOPS_GATEWAY_PYTHON"
# The production API key of `llmops serve` (deploy.api_key_env names it; this is the default).
ENV_API_KEY: Final = "LLMOPS_API_KEY"
# The interpreter of the llm-compressor environment (.venv-quantize): the quantize stage runs its
# worker there, because llm-compressor pins a transformers older than the project's.
ENV_QUANTIZE_PYTHON: Final = "LLMOPS_QUANTIZE_PYTHON"
# The project root (the directory holding dvc.yaml and params.yaml); see components/project.py.
ENV_PROJECT_DIR: Final = "LLMOPS_PROJECT_DIR"
# Set by the flow: where `llmops stage` writes its exit code, because `dvc repro` replaces a
# failed command's exit code with its own (see flows/stage_report.py).
ENV_STAGE_REPORT: Final = "LLMOPS_STAGE_REPORT"

# Exit code of a stage that failed for a reason worth retrying unchanged (tracking server
# unreachable or 5xx, SQLite busy): EX_TEMPFAIL from sysexits.h. The Prefect task retries on
# exactly this code; any other non-zero exit is final.
EXIT_TRANSIENT: Final = 75

# In the packed corpus (the pack stage's output): which record became which tokens, a document's
# span in its split's token stream (before the stream is cut into sequences, so
# token_start // seq_len is its first sequence), with its `source` and `source_id`, by which
# lineage finds the versions trained on a document (components/tracking/trace.py).
DOCUMENTS_FILE: Final = "documents.parquet"

# Evaluation sets under the task directory: curation removes training documents that overlap
# them (decontamination).
EVAL_SET_FILES: Final = ("eval.jsonl", "prefs_test.jsonl")
