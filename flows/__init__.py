"""Prefect flows: orchestration only, no ML logic."""
