"""Backbones edge-ee ships adapters for: CIFAR ResNets (any depth) and a small CNN."""
