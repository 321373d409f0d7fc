"""lm-eval task YAMLs of the bundled tasks and the functions they name (llmops_tasks.py)."""
