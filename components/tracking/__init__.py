"""MLflow tracking and registry for stages: one metrics interface, one registration path."""
