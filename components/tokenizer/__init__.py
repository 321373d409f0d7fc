"""tokenizer stages."""
