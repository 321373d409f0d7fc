"""tokenizer stage: the tokenizer every later stage uses, saved in HF format.

From scratch (`model.init: scratch`) a byte-level BPE tokenizer is trained on the training
mixture with the project's ChatML template. With a checkpoint its own tokenizer and chat
template are adopted, untrained (its embeddings were learned with them); only a checkpoint
without a chat template gets ChatML, adding any of its tokens the vocabulary lacks (pretraining
then grows the embeddings), and one without a padding token pads with its EOS.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from components.chat import CHAT_TEMPLATE, EOS, IM_END, IM_START, PAD, SPECIAL_TOKENS
from components.config import StageParams, TokenizerParams
from components.modeling import checkpoint
from components.stage import StageResult
from components.tracking.stage_run import Tracker

log = logging.getLogger(__name__)


class Reads(StageParams):
    tokenizer: TokenizerParams


@dataclass(frozen=True)
class Paths:
    docs: Path  # mixed Parquet shards (column `text`)
    init: Path  # checkpoint stage output (models/init)
    out: Path  # HF tokenizer directory
    metrics: Path


def iter_texts(docs_dir: Path, batch_size: int = 256) -> Iterator[list[str]]:
    for shard in sorted(docs_dir.glob("*.parquet")):
        table = pq.read_table(shard, columns=["text"])
        texts = table.column("text").to_pylist()
        for i in range(0, len(texts), batch_size):
            yield texts[i : i + batch_size]


def train_tokenizer(
    batches: Iterable[list[str]], vocab_size: int, min_frequency: int = 2
) -> PreTrainedTokenizerFast:
    """Byte-level BPE (GPT-2 style: no unknown tokens) with ChatML special tokens."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=True,
    )
    tok.train_from_iterator(batches, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=EOS,
        pad_token=PAD,
        bos_token=None,
        additional_special_tokens=[IM_START, IM_END],
        model_max_length=1_000_000,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def adopt_tokenizer(init_dir: Path) -> PreTrainedTokenizerBase:
    """The checkpoint's tokenizer, with ChatML only where it has no chat template."""
    tokenizer = AutoTokenizer.from_pretrained(init_dir)
    if not tokenizer.chat_template:
        missing = [t for t in (IM_START, IM_END) if t not in tokenizer.get_vocab()]
        if missing:
            tokenizer.add_special_tokens(
                {"extra_special_tokens": missing}, replace_extra_special_tokens=False
            )
        tokenizer.chat_template = CHAT_TEMPLATE
        log.info("%s has no chat template: ChatML (added tokens: %s)", init_dir, missing)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def run(params: Reads, paths: Paths, tracker: Tracker) -> StageResult:
    cfg = params.tokenizer
    if checkpoint.is_scratch(paths.init):
        tokenizer = train_tokenizer(iter_texts(paths.docs), cfg.vocab_size, cfg.min_frequency)
    else:
        tokenizer = adopt_tokenizer(paths.init)
    paths.out.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(paths.out)
    sample = next(iter_texts(paths.docs, batch_size=64))
    n_chars = sum(len(t) for t in sample)
    n_tokens = sum(len(ids) for ids in tokenizer(sample)["input_ids"])
    tracker.log_artifact(paths.out, "tokenizer")
    return StageResult(
        metrics={
            "vocab_size": len(tokenizer),
            "chars_per_token": round(n_chars / max(n_tokens, 1), 4),
        }
    )
