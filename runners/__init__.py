"""One BentoML service per model, each with adaptive batching (see runners/README.md)."""
