"""serving stages."""
