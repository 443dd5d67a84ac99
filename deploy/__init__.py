"""Deployment tooling: local HAProxy replicas, Kubernetes manifests, capacity planning."""
