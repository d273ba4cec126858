"""Per-GPU memory of a LoRA training step, from the model's shape (README "Llama-2-7B: memory").

Exact parts (tensor bytes, checked against live models in tests): the base weights in `model_dtype`;
each trainable LoRA tensor in fp32 with its gradient and AdamW's two moments (16 B/param); I-LoRA's
slow learner (4 B/param). Estimated part: activations saved for backward, per token and decoder layer
`ACT_BYTES_PER_H[...] · hidden` bytes — coefficients measured on CPU (`measure_saved_bytes`: the
per-layer slope of saved-tensor bytes of LLaMA shapes, intermediate ≈ 2.75·hidden as in SmolLM2 and
Llama-2, all-linear LoRA, seq 128; with checkpointing exactly the layer input) — plus the fp32
logits at label positions, replay's second batch (ER, I-LoRA), I-LoRA's slow hidden states and
consistency buffers, and with gradient checkpointing one layer's activations recomputed at a time.
CUDA context and allocator slack are not tensors: `fits` adds HEADROOM_GIB and 10%.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from mcl.adapters.spec import LoraSpec

GIB = 2**30
DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
# bytes saved for backward per token per decoder layer, in units of hidden size: (activation dtype, checkpointing)
ACT_BYTES_PER_H = {("fp32", False): 103.0, ("bf16", False): 82.0, ("fp32", True): 4.0, ("bf16", True): 2.0}
HEADROOM_GIB = 1.5  # CUDA context, cuBLAS workspaces
REPLAY_METHODS = {"er": 2, "ilora": 2, "ilora-released": 2}  # batches in one step's graph
SLOW_METHODS = {"ilora", "ilora-released"}


@dataclass(frozen=True)
class Shape:
    """What the formula needs of a LLaMA-style causal LM's config."""

    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int
    tied: bool

    @classmethod
    def from_config(cls, config: Any) -> "Shape":
        """Read an HF config (object or dict)."""
        get = config.get if isinstance(config, dict) else lambda k, d=None: getattr(config, k, d)
        heads = get("num_attention_heads")
        return cls(get("hidden_size"), get("intermediate_size"), get("num_hidden_layers"), heads,
                   get("num_key_value_heads") or heads, get("vocab_size"), bool(get("tie_word_embeddings", False)))

    def module_dims(self) -> dict[str, tuple[int, int]]:
        """(in, out) features of each decoder-layer linear module."""
        h, i, kv = self.hidden, self.intermediate, self.kv_heads * (self.hidden // self.heads)
        return {"q_proj": (h, h), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (h, h),
                "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}

    def base_params(self) -> int:
        """Every base parameter: embeddings, (untied) LM head, decoder layers with their two norms, final norm."""
        layer = sum(a * b for a, b in self.module_dims().values()) + 2 * self.hidden
        return self.vocab * self.hidden * (1 if self.tied else 2) + self.layers * layer + self.hidden

    def lora_params(self, lora: LoraSpec) -> int:
        """Parameters of one LoRA adapter: r·(in + out) per targeted module per layer."""
        dims = self.module_dims()
        targets = dims if lora.target_modules == "all-linear" else lora.target_modules  # PEFT's keyword
        return self.layers * sum(lora.r * sum(dims[m]) for m in targets if m in dims)


@dataclass
class MemoryEstimate:
    """GiB per GPU by part, and the total."""

    base: float
    lora_and_optimizer: float
    slow_learner: float
    activations: float
    total: float

    @property
    def total_gib(self) -> float:
        """The total in GiB."""
        return self.total

    def fits(self, gpu_gib: float) -> bool:
        """Whether the step fits a GPU of `gpu_gib` with 10% + HEADROOM_GIB to spare."""
        return self.total * 1.1 + HEADROOM_GIB <= gpu_gib

    def to_dict(self) -> dict[str, float]:
        """Plain dict of GiB figures."""
        return {k: round(v, 3) for k, v in asdict(self).items()}


def estimate(shape: Shape, lora: LoraSpec | None = None, method: str = "seq", batch: int = 16, seq_len: int = 256,
             model_dtype: str = "bf16", checkpointing: bool = False, answer_fraction: float = 0.25) -> MemoryEstimate:
    """Memory of one training step per GPU (batch = per-device micro-batch, seq_len = padded length)."""
    lora = lora or LoraSpec()
    act = "fp32" if model_dtype == "fp32" else "bf16"
    n_lora = shape.lora_params(lora)
    tokens = batch * seq_len * REPLAY_METHODS.get(method, 1)
    per_layer = ACT_BYTES_PER_H[(act, checkpointing)] * shape.hidden
    activations = tokens * shape.layers * per_layer
    if checkpointing:  # backward recomputes one layer's full activations at a time
        activations += tokens * ACT_BYTES_PER_H[(act, False)] * shape.hidden
    activations += tokens * answer_fraction * shape.vocab * 4 * 2  # fp32 logits at label positions + their grad
    if method in SLOW_METHODS:  # replay batch: slow hidden states, stacked fast/slow, difference, fp32 square
        replay = batch * seq_len
        activations += replay * shape.layers * shape.hidden * (5 * DTYPE_BYTES[act] + 8)
    parts = {
        "base": shape.base_params() * DTYPE_BYTES[model_dtype],
        "lora_and_optimizer": n_lora * 16,
        "slow_learner": n_lora * 4 if method in SLOW_METHODS else 0,
        "activations": activations,
    }
    return MemoryEstimate(**{k: v / GIB for k, v in parts.items()}, total=sum(parts.values()) / GIB)


def estimate_for(model: str, method: str, batch: int, seq_len: int, model_dtype: str = "bf16",
                 checkpointing: bool = False, lora: LoraSpec | None = None) -> MemoryEstimate:
    """`estimate` for a model given by name, dir or hub id (its config.json is read, no weights)."""
    from transformers import AutoConfig

    from mcl.models import resolve_model

    shape = Shape.from_config(AutoConfig.from_pretrained(resolve_model(model)))
    return estimate(shape, lora, method, batch, seq_len, model_dtype, checkpointing)


LLAMA2_7B = Shape(hidden=4096, intermediate=11008, layers=32, heads=32, kv_heads=32, vocab=32000, tied=False)


def measure_saved_bytes(model, input_ids, attention_mask) -> int:
    """Bytes of the distinct tensors autograd saves for backward in one forward (the exact activation memory)."""
    import torch

    storages: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=1, use_cache=False)
    return sum(storages.values())


def table(shape: Shape, lora: LoraSpec, method: str, seq_len: int, batches: list[int],
          gpus: tuple[int, ...] = (24, 40, 80)) -> str:
    """A markdown table: GiB by part per micro-batch size, with and without checkpointing, and which GPUs fit."""
    rows = ["| micro-batch | checkpointing | base | LoRA + AdamW | slow learner | activations | total | fits |",
            "|---|---|---|---|---|---|---|---|"]
    for batch in batches:
        for ckpt in (False, True):
            e = estimate(shape, lora, method, batch, seq_len, "bf16", ckpt)
            fits = ", ".join(f"{g} GB" for g in gpus if e.fits(g)) or "none"
            rows.append(f"| {batch} | {'on' if ckpt else 'off'} | {e.base:.1f} | {e.lora_and_optimizer:.2f} | "
                        f"{e.slow_learner:.3f} | {e.activations:.1f} | {e.total:.1f} | {fits} |")
    return "\n".join(rows)


if __name__ == "__main__":  # python -m mcl.train.memory: the README's Llama-2-7B table
    print(table(LLAMA2_7B, LoraSpec(r=8, alpha=16.0, target_modules=["q_proj", "v_proj"]), "ilora", 1024,
                [1, 2, 4, 8, 16]))
