"""The tiny LLaMA: a byte-level BPE tokenizer and a ~5M-parameter model pretrained offline.

Its pretraining corpus is the `pretrain` split of the Python standard library (code, comments and
docstrings; see `mcl.data.sources`), never the suite's task data. The weights ship with the package
(`assets/tiny`, fp16); `retrain()` reproduces them from the recorded command and seed (on the Python
version that made them, 3.11: the stdlib differs between versions). The held-out text ships too
(`assets/tiny-heldout.json.gz`: the first held-out stdlib files of Python 3.11 that fill the 64
windows the held-out loss reads), so `mcl models info tiny --heldout` gives one number everywhere.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from mcl.data.sources import read_text, stdlib_files
from mcl.errors import MclError
from mcl.io import atomic_path, write_json_atomic

ASSET_DIR = Path(__file__).parent / "assets" / "tiny"
HELDOUT_FILE = Path(__file__).parent / "assets" / "tiny-heldout.json.gz"
HELDOUT_SHA256 = "25945bdb757fa1c34202cbf348644ac1645e46db8c2e2250421425d5b9132c3d"  # of the uncompressed JSON
SPECIALS = {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>"}


@dataclass
class TinySpec:
    """Architecture and pretraining recipe of the tiny model (recorded next to its weights)."""

    vocab_size: int = 4096
    hidden_size: int = 256
    intermediate_size: int = 704
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    max_position_embeddings: int = 512
    seq_len: int = 256
    batch_size: int = 16
    steps: int = 4000
    lr: float = 2e-3
    warmup: int = 100
    weight_decay: float = 0.1
    seed: int = 0


def train_tokenizer(texts: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer with one token per digit; BOS/EOS/PAD as specials."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIALS.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIALS)
    fast.add_bos_token = False  # mcl adds BOS itself (loss convention); never implicitly
    return fast


def model_config(spec: TinySpec, tokenizer: PreTrainedTokenizerFast) -> LlamaConfig:
    """LLaMA config for the tiny model (an untied output head: with a tied one the label logits are capped)."""
    return LlamaConfig(
        vocab_size=spec.vocab_size,
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_hidden_layers,
        num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_attention_heads,
        max_position_embeddings=spec.max_position_embeddings,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def _token_stream(tokenizer: PreTrainedTokenizerFast, texts: list[str]) -> torch.Tensor:
    ids: list[int] = []
    for t in texts:
        ids.extend(tokenizer(t, add_special_tokens=False)["input_ids"])
        ids.append(tokenizer.eos_token_id)
    return torch.tensor(ids, dtype=torch.long)


@torch.no_grad()
def heldout_loss(model: LlamaForCausalLM, stream: torch.Tensor, seq_len: int, max_windows: int = 64) -> float:
    """Mean next-token loss (nats) over non-overlapping windows of a held-out token stream."""
    model.eval()
    n = min(max_windows, len(stream) // seq_len)
    x = stream[: n * seq_len].view(n, seq_len)
    total = 0.0
    for chunk in x.split(16):
        total += model(input_ids=chunk, labels=chunk).loss.item() * len(chunk)
    return total / n


def retrain(out_dir: Path = ASSET_DIR, spec: TinySpec | None = None, log_every: int = 100) -> dict:
    """Train the tokenizer and pretrain the tiny model from scratch; write an HF dir (fp16)."""
    spec = spec or TinySpec()
    torch.manual_seed(spec.seed)
    t0 = time.time()
    texts = [read_text(f) for f in stdlib_files("pretrain")]
    tokenizer = train_tokenizer(texts, spec.vocab_size)
    stream = _token_stream(tokenizer, texts)
    held = heldout_stream(tokenizer)
    model = LlamaForCausalLM(model_config(spec, tokenizer))
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": spec.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=spec.lr,
        betas=(0.9, 0.95),
    )

    def lr_at(step: int) -> float:
        if step < spec.warmup:
            return spec.lr * (step + 1) / spec.warmup
        frac = (step - spec.warmup) / max(1, spec.steps - spec.warmup)
        return spec.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))

    gen = torch.Generator().manual_seed(spec.seed)
    history = []
    print(f"corpus {len(stream)} tokens, held-out {len(held)}; {sum(p.numel() for p in model.parameters())} params")
    for step in range(spec.steps):
        model.train()
        starts = torch.randint(0, len(stream) - spec.seq_len, (spec.batch_size,), generator=gen)
        x = torch.stack([stream[s : s + spec.seq_len] for s in starts.tolist()])
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(input_ids=x, labels=x).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if (step + 1) % log_every == 0 or step == spec.steps - 1:
            rec = {"step": step + 1, "train_loss": round(loss.item(), 4), "seconds": round(time.time() - t0, 1)}
            if (step + 1) % (5 * log_every) == 0 or step == spec.steps - 1:
                rec["heldout_loss"] = round(heldout_loss(model, held, spec.seq_len), 4)
            history.append(rec)
            print(json.dumps(rec), flush=True)
    final = heldout_loss(model, held, spec.seq_len)
    info = {
        "command": "mcl models prepare tiny --retrain",
        "spec": asdict(spec),
        "corpus": "Python stdlib 'pretrain' split (mcl.data.sources), excluding pydoc_data",
        "corpus_tokens": len(stream),
        "tokens_seen": spec.steps * spec.batch_size * spec.seq_len,
        "heldout_loss": round(final, 4),
        "uniform_loss": round(math.log(spec.vocab_size), 4),
        "seconds": round(time.time() - t0, 1),
        "torch": torch.__version__,
        "history": history,
    }
    with atomic_path(out_dir) as tmp:
        model.to(torch.float16).save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_json_atomic(tmp / "pretrain.json", info)
    return info


def heldout_texts() -> list[str]:
    """The shipped held-out texts (Python 3.11 stdlib files never seen in pretraining), hash-checked."""
    raw = gzip.decompress(HELDOUT_FILE.read_bytes())
    if hashlib.sha256(raw).hexdigest() != HELDOUT_SHA256:
        raise MclError(f"{HELDOUT_FILE}: content differs from its recorded sha256; reinstall mcl")
    return [f["text"] for f in json.loads(raw)["files"]]


def heldout_stream(tokenizer: PreTrainedTokenizerFast) -> torch.Tensor:
    """Token stream of the shipped held-out texts."""
    return _token_stream(tokenizer, heldout_texts())
