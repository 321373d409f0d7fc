"""llmops components: pure, typed stage code. Never imports `flows`."""
