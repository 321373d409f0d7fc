"""training stages."""
