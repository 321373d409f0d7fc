"""Curation benchmark: documents/s per core of the data refinery, whole and block by block,
against DataTrove's equivalent blocks on the same documents, in the same run.

    python -m bench.curation              # 100 MiB synthetic corpus (~33k docs), ~45 min
    python -m bench.curation --mib 1      # ~320 docs, about a minute and a half

What is measured (measure.py): one process pinned to one core, documents per CPU second.
- ours.whole: the refinery's `refine()` over the corpus, every block, each one seeing only
  what survives the blocks before it.
- ours.blocks / datatrove.blocks: each block alone, a fresh instance, over ALL corpus documents
  (the same documents on both sides; stateful dedup blocks see the whole corpus).
- common chain: the blocks both sides have (blocks.py), in the refinery's order, as a chain on
  each side; `ratios.whole_chain` is ours / DataTrove on it. Each side drops different
  documents early (DataTrove's Gopher rule "80% of words contain a letter" counts spaCy's
  punctuation tokens as words and drops most play and code pages), so
  `ratios.common_blocks_summed` also compares equal work: per-block times added up.
- datatrove_rules_matched: DataTrove's Gopher filters re-timed with the rules we do not
  implement switched off, to separate rule count from speed.

Modules: corpus.py + snippets.py (the synthetic corpus), ours.py (our blocks), datatrove_side.py
(DataTrove made to run offline), blocks.py (the table of compared blocks and param mapping),
report.py (JSON, table, MLflow), compare.py (do two results agree on every decision?).
Results: bench/results/curation.json and MLflow (experiment `llmops-bench`).
"""
