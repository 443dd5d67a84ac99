"""Kubernetes manifests (kustomize base + overlays) and the renderer the tests use."""
