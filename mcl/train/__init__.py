"""Continual LoRA training: one loop, a registry of methods, per-task checkpoints and CL metrics."""
