"""Per-GPU memory of a LoRA training step, from the model's shape (README "Llama-2-7B: memory").

Exact parts (tensor bytes, checked against live models in tests): the base weights in `model_dtype`;
each trainable LoRA tensor in fp32 with its gradient and AdamW's two moments (16 B/param); I-LoRA's
slow learner (4 B/param). Estimated part, the step's activations at their peak, per micro-batch of
T = batch × seq_len tokens (seq_len: the padded length), N = answer_fraction × T label positions:
- saved for backward, per token and decoder layer: `LAYER_BYTES` (a·hidden + b·intermediate +
  c·kv_width, by activation dtype) + 2 bytes per input feature of each LoRA-targeted module; with
  gradient checkpointing only the layer input (dtype bytes × hidden) plus one layer recomputed;
- replay (ER, I-LoRA) keeps two batches' graphs;
- the LM head at label positions only: N × vocab × (4 per batch in the graph + 8 in its backward);
- I-LoRA: the slow learner's states of every layer (and, below fp32, the fast ones the consistency
  term keeps) on the replay batch.
The coefficients come from measured peaks of real CPU steps (benchmarks/memory_check.py: torch's
profiler over the allocator's events, tiny and SmolLM2 shapes, seq/ER/I-LoRA, checkpointing on and off,
all within 25 %). CUDA context and allocator slack are not tensors: `fits` adds HEADROOM_GIB and 10%.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from mcl.adapters.spec import LoraSpec

GIB = 2**30
DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
# bytes saved per token per decoder layer (no checkpointing) = a·hidden + b·intermediate + c·kv_width, by activation
# dtype (the base weights' dtype: fp32, or half for bf16/fp16); measured peaks, see the module docstring
LAYER_BYTES = {"fp32": (11.5, 13.6, 8.2), "half": (12.0, 6.0, 4.2)}
LORA_INPUT_BYTES = 2.0  # per input feature of each LoRA-targeted module, per token
HEADROOM_GIB = 1.5  # CUDA context, cuBLAS workspaces
GPU_GIB = {24: 23.5, 40: 39.4, 80: 79.1}  # GiB that torch reports on "24/40/80 GB" cards (e.g. 4090, A100, H100)
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

    @property
    def kv_width(self) -> int:
        """Features of the key (and of the value) projection: kv_heads × head size."""
        return self.kv_heads * (self.hidden // self.heads)

    def module_dims(self) -> dict[str, tuple[int, int]]:
        """(in, out) features of each decoder-layer linear module."""
        h, i, kv = self.hidden, self.intermediate, self.kv_width
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
    """Memory of one training step per GPU (batch = per-device micro-batch, seq_len = padded length).

    The activation dtype is the base weights' (`model_dtype`): bf16 autocast over a bf16 base was measured
    within the same tolerance as without it.
    """
    lora = lora or LoraSpec()
    act = "fp32" if model_dtype == "fp32" else "half"
    width = DTYPE_BYTES[model_dtype]
    n_lora = shape.lora_params(lora)
    tokens = batch * seq_len
    graphs = REPLAY_METHODS.get(method, 1)
    dims = shape.module_dims()
    a, b, c = LAYER_BYTES[act]
    full_layer = tokens * (a * shape.hidden + b * shape.intermediate + c * shape.kv_width
                           + LORA_INPUT_BYTES * sum(dims[m][0] for m in lora.target_modules if m in dims))
    if checkpointing:  # each layer keeps its input; backward recomputes one layer of one batch at a time
        activations = graphs * shape.layers * tokens * width * shape.hidden + full_layer
    else:
        activations = graphs * shape.layers * full_layer
    activations += tokens * answer_fraction * shape.vocab * (4 * graphs + 8)  # fp32 log-probs, then their grads
    if method in SLOW_METHODS:  # slow states (and, below fp32, the fast ones) of every layer on the replay batch
        activations += tokens * shape.layers * shape.hidden * width * (1 if act == "fp32" else 2)
    parts = {
        "base": shape.base_params() * DTYPE_BYTES[model_dtype],
        "lora_and_optimizer": n_lora * 16,
        "slow_learner": n_lora * 4 if method in SLOW_METHODS else 0,
        "activations": activations,
    }
    return MemoryEstimate(**{k: v / GIB for k, v in parts.items()}, total=sum(parts.values()) / GIB)


def model_shape(model: str) -> Shape | None:
    """The shape of a model given by name, dir or hub id (its config.json, no weights); None if not LLaMA-style."""
    from transformers import AutoConfig

    from mcl.models import resolve_model

    config = AutoConfig.from_pretrained(resolve_model(model))
    keys = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size")
    if any(not isinstance(getattr(config, k, None), int) for k in keys):
        return None
    return Shape.from_config(config)


def estimate_for(model: str, method: str, batch: int, seq_len: int, model_dtype: str = "bf16",
                 checkpointing: bool = False, lora: LoraSpec | None = None) -> MemoryEstimate:
    """`estimate` for a model given by name, dir or hub id (its config.json is read, no weights)."""
    return estimate(model_shape(model), lora, method, batch, seq_len, model_dtype, checkpointing)


def estimate_run(cfg: Any, shape: Shape | None = None) -> MemoryEstimate | None:
    """The formula for a run config (RunConfig): LoRA, method, micro-batch × max_len, dtype, checkpointing.

    The shape is read from the model's config.json (no weights) unless given; None when that config does not
    describe a LLaMA-style decoder (the formula's shape).
    """
    shape = shape or model_shape(cfg.model)
    if shape is None:
        return None
    t = cfg.train
    return estimate(shape, cfg.lora, cfg.method, t.batch_size, t.max_len, cfg.model_dtype, t.gradient_checkpointing)


def check_run_memory(cfg: Any, device: Any, say: Any = print) -> MemoryEstimate | None:
    """Print the run's estimate (one line, via `say`); on a GPU refuse a config that cannot fit its free memory.

    The refusal is a one-line MclError naming what to change; `train.ignore_memory_check: true` runs anyway.
    """
    import torch

    from mcl.errors import MclError

    try:
        est = estimate_run(cfg)
    except (OSError, ValueError, KeyError) as e:  # loading the model reports what is wrong with it
        say(f"memory estimate: none (the config of {cfg.model} could not be read: {type(e).__name__})")
        return None
    t = cfg.train
    if est is None:
        say(f"memory estimate: none ({cfg.model} is not a LLaMA-style decoder the formula knows)")
        return None
    line = (f"memory estimate per device: {est.total:.1f} GiB (base {est.base:.1f}, LoRA + AdamW "
            f"{est.lora_and_optimizer + est.slow_learner:.2f}, activations {est.activations:.1f}) at micro-batch "
            f"{t.batch_size} x {t.max_len} tokens, {cfg.method}, "
            f"checkpointing {'on' if t.gradient_checkpointing else 'off'}")
    on_gpu = getattr(device, "type", str(device)) == "cuda" and torch.cuda.is_available()
    free = torch.cuda.mem_get_info(device)[0] / GIB if on_gpu else None
    say(line if free is None else f"{line}; {free:.1f} GiB free on {device}")
    if free is not None and not est.fits(free) and not t.ignore_memory_check:
        raise MclError(f"this run needs about {est.total * 1.1 + HEADROOM_GIB:.1f} GiB on {device} (estimate + 10% + "
                       f"{HEADROOM_GIB} GiB), {free:.1f} GiB are free: lower train.batch_size (raise "
                       f"train.grad_accum), set train.gradient_checkpointing: true or lower train.max_len; "
                       f"train.ignore_memory_check=true runs it anyway")
    return est


LLAMA2_7B = Shape(hidden=4096, intermediate=11008, layers=32, heads=32, kv_heads=32, vocab=32000, tied=False)


def table(shape: Shape, lora: LoraSpec, method: str, seq_len: int, batches: list[int],
          gpus: tuple[int, ...] = (24, 40, 80)) -> str:
    """A markdown table: GiB by part per micro-batch size, with and without checkpointing, and which GPUs fit."""
    rows = ["| micro-batch | checkpointing | base | LoRA + AdamW | slow learner | activations | total | fits |",
            "|---|---|---|---|---|---|---|---|"]
    for batch in batches:
        for ckpt in (False, True):
            e = estimate(shape, lora, method, batch, seq_len, "bf16", ckpt)
            fits = ", ".join(f"{g} GB" for g in gpus if e.fits(GPU_GIB[g])) or "none"
            rows.append(f"| {batch} | {'on' if ckpt else 'off'} | {e.base:.1f} | {e.lora_and_optimizer:.2f} | "
                        f"{e.slow_learner:.3f} | {e.activations:.1f} | {e.total:.1f} | {fits} |")
    return "\n".join(rows)


if __name__ == "__main__":  # python -m mcl.train.memory: the README's Llama-2-7B table
    print(table(LLAMA2_7B, LoraSpec(r=8, alpha=16.0, target_modules=["q_proj", "v_proj"]), "ilora", 1536,
                [1, 2, 4, 8, 16]))
