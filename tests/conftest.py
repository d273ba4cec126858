"""Shared fixtures: an offline tiny tokenizer, tiny LLaMA models built from a config, task-dir writers."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TOKENIZER_TEXTS = [
    "def add(a, b):\n    return a + b\n",
    "The committee voted 7 to 2 to approve the budget. Inflation rose in March.",
    "Ana has 4 apples and buys 3. How many apples does Ana have now?\nAnswer: 7",
    "Target: bike lanes\nPost: Bike lanes should be expanded.\nStance: favor",
    "News: Shares rise as profits beat forecasts.\nTopic: business sport politics tech entertainment",
] * 20


@pytest.fixture(scope="session")
def tiny_tokenizer():
    """A byte-level BPE tokenizer (vocab 512, bos/eos/pad) trained in a second on fixed texts."""
    from mcl.models.tiny import train_tokenizer

    return train_tokenizer(TOKENIZER_TEXTS, vocab_size=512)


@pytest.fixture
def make_tiny_llama(tiny_tokenizer) -> Callable[..., torch.nn.Module]:
    """Factory: `make_tiny_llama(seed=0, hidden=32, layers=2)` → a random LlamaForCausalLM in eval mode."""
    from transformers import LlamaConfig, LlamaForCausalLM

    def make(seed: int = 0, hidden: int = 32, layers: int = 2):
        torch.manual_seed(seed)
        config = LlamaConfig(
            vocab_size=len(tiny_tokenizer), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
            num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=512, tie_word_embeddings=False,
            bos_token_id=tiny_tokenizer.bos_token_id, eos_token_id=tiny_tokenizer.eos_token_id,
            pad_token_id=tiny_tokenizer.pad_token_id,
        )
        return LlamaForCausalLM(config).eval()

    return make


@pytest.fixture
def tiny_llama(make_tiny_llama):
    """A random tiny LlamaForCausalLM (hidden 32, 2 layers) matching `tiny_tokenizer`."""
    return make_tiny_llama()


@pytest.fixture
def write_task_dir(tmp_path) -> Callable[..., Path]:
    """Factory: `write_task_dir(name, {split: [{"prompt", "answer"}...]}, spec=None, jsonl=False)` → dir."""

    def write(name: str, splits: dict[str, list[dict]], spec: dict | None = None, jsonl: bool = False) -> Path:
        d = tmp_path / name
        d.mkdir(parents=True)
        for split, rows in splits.items():
            if jsonl:
                (d / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
            else:
                (d / f"{split}.json").write_text(json.dumps(rows, indent=1))
        if spec is not None:
            (d / "task.json").write_text(json.dumps(spec))
        return d

    return write
