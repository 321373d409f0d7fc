"""registry stages."""
