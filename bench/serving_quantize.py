"""Quantize the serving bench's model with llm-compressor (run by bench/serving.py).

Runs in the quantization environment (`.venv-quantize`: llm-compressor 0.14 pins transformers
<= 5.17), so it imports nothing from the project. Writes compressed-tensors checkpoints that
vLLM serves without a `--quantization` flag (it reads the scheme from config.json):

    python bench/serving_quantize.py FP_DIR OUT_DIR int8|int4 [--samples N]

int8 is W8A8 (int8 weights per channel, int8 activations per token, dynamic: no calibration
needed for the activations); int4 is W4A16 (group size 128, so every quantized layer's input
size must be a multiple of 128). Weights are rounded to nearest (QuantizationModifier) unless
--gptq: the bench measures serving speed, which depends on the checkpoint's format and not on
how its values were chosen, and GPTQ took over 13 minutes on this shared 2-core machine (the
quantize stage uses GPTQ where quality matters).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

SCHEMES = {"int8": "W8A8", "int4": "W4A16"}


def calibration_dataset(texts_path: Path, tokenizer, n: int, max_len: int):
    from datasets import Dataset

    texts = [json.loads(line)["text"] for line in texts_path.read_text().splitlines() if line]
    texts = [t for t in texts if len(t) > 200][:n]
    enc = tokenizer(texts, truncation=True, max_length=max_len)
    return Dataset.from_dict(
        {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("fp_dir", type=Path)
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("variant", choices=sorted(SCHEMES))
    ap.add_argument("--texts", type=Path, default=Path("data/keeprate/clean.jsonl"))
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--max-len", type=int, default=256)
    ap.add_argument("--gptq", action="store_true", help="GPTQ instead of round-to-nearest")
    args = ap.parse_args()

    from llmcompressor import oneshot
    from llmcompressor.modifiers.quantization import GPTQModifier, QuantizationModifier
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(args.fp_dir, dtype="float32")
    tokenizer = AutoTokenizer.from_pretrained(args.fp_dir)
    scheme = SCHEMES[args.variant]
    # lm_head stays fp: it is tied to the embedding, and vLLM's CPU kernels take Linear only.
    modifier = GPTQModifier if args.gptq else QuantizationModifier
    recipe = modifier(targets="Linear", scheme=scheme, ignore=["lm_head"])
    oneshot(
        model=model,
        tokenizer=tokenizer,
        recipe=recipe,
        dataset=calibration_dataset(args.texts, tokenizer, args.samples, args.max_len),
        num_calibration_samples=args.samples,
        max_seq_length=args.max_len,
    )
    args.out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(args.out_dir, save_compressed=True)
    tokenizer.save_pretrained(args.out_dir)
    print(f"{args.variant} ({scheme}) written to {args.out_dir}")


if __name__ == "__main__":
    main()
