"""N `bentoml serve` replicas behind HAProxy, supervised, with zero-downtime upgrades (deploy/README.md)."""
