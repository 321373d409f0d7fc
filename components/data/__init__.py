"""data stages."""
