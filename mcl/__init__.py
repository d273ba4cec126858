"""mcl: mode-connectivity analysis and continual LoRA training (incl. I-LoRA) for causal LMs."""

__version__ = "0.1.0"
