"""Prompt methods: the base model stays frozen and whole, soft prompts in front of its input learn the tasks.

`PromptMethod` wires a method's prompt `prefix(input_ids, attention_mask)` into the model through
`mcl.models.prefix.SoftPrefix` (one model, no PEFT forward; every loss, evaluator and `generate` call
sees the virtual tokens). These methods write no LoRA checkpoints, so the path analysis does not apply
to them (`mcl list` says which methods produce LoRA checkpoints). Prompts start as the embeddings of
random vocabulary tokens (seeded per task), the sampled-vocabulary initialisation of Lester et al. 2021.

Progressive Prompts (Razdaibiedin et al. 2023): task k learns its own prompt P_k of `prefix_length`
tokens, through a residual MLP (bottleneck `mlp_bottleneck`, 0 = none) as in the paper and the seed
code, with every earlier prompt frozen and concatenated behind it: the input is [P_k; P_{k−1}; …; P_0; x]
in training and at inference (for every task). The checkpoint after task k is a plain PEFT
prompt-tuning dir holding that concatenation (k+1 · prefix_length virtual tokens), which
`PeftModel.from_pretrained` loads and scores exactly as mcl did.

L2P (Wang et al. 2022): one pool of `pool_size` prompts of `prompt_length` tokens with learned keys, shared
by all tasks; each example's query is the frozen base model's final hidden state averaged over its input
(prompt) tokens, the `top_n` prompts whose keys are most cosine-similar to it are prepended (in key
order), and the loss adds `key_weight` · Σ (1 − cos(query, chosen key)), the paper's surrogate term.
Selection needs the query, so a checkpoint is the pool itself (`prompt_pool.safetensors`, `l2p.json`),
not a PEFT dir.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from mcl.errors import MclError
from mcl.io import atomic_path, is_main_process, sha256_file, write_json_atomic
from mcl.models.prefix import SoftPrefix, current_input_mask
from mcl.train.methods.base import Method, register

POOL = "prompt_pool.safetensors"  # an L2P checkpoint: the pool's prompts and keys, with l2p.json beside it


def vocab_init(model, n: int, generator: torch.Generator) -> torch.Tensor:
    """n rows of the input embedding matrix at random token ids (fp32 copies)."""
    weight = model.get_input_embeddings().weight
    ids = torch.randint(0, weight.shape[0], (n,), generator=generator)
    return weight.detach()[ids.to(weight.device)].float().clone()


def write_prompt_dir(model, prompt: torch.Tensor, out_dir: Path, meta: dict) -> Path:
    """A plain PEFT prompt-tuning dir (adapter_config.json, adapter_model.safetensors) plus mcl.json, atomically."""
    from peft import PromptTuningConfig

    from mcl.models import base_model_id

    cfg = model.config
    config = PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=prompt.shape[0], token_dim=prompt.shape[1],
                                num_transformer_submodules=1, num_attention_heads=cfg.num_attention_heads,
                                num_layers=cfg.num_hidden_layers, base_model_name_or_path=base_model_id(model))
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        config.save_pretrained(tmp)
        save_file({"prompt_embeddings": prompt.detach().float().cpu().contiguous()}, tmp / "adapter_model.safetensors",
                  metadata={"format": "pt"})
        sidecar = {"base_model": base_model_id(model), **meta, "sha256": sha256_file(tmp / "adapter_model.safetensors")}
        write_json_atomic(tmp / "mcl.json", sidecar)
    return out_dir


class PromptMethod(Method):
    """Shared wiring of the prompt methods: a frozen base, a prompt module on it, the prefix hooks."""

    produces_lora = False
    fsdp = False  # the prompt module sits outside the decoder layers FSDP shards

    def setup(self, base_model, spec, seed):
        for p in base_model.parameters():
            p.requires_grad_(False)
        base_model.add_module("mcl_prompts", self.build(base_model, seed))
        self.soft = SoftPrefix(base_model, self.prefix)
        return base_model

    def build(self, model, seed: int) -> torch.nn.Module:
        """The module holding this method's prompt tensors (registered on the model, moved with it)."""
        raise NotImplementedError

    def prefix(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The (batch, L, hidden) soft prompt in front of this batch."""
        raise NotImplementedError

    @property
    def prompts(self) -> torch.nn.Module:
        """The prompt module on the live model."""
        return self.ctx.peft.mcl_prompts

    def base_view(self):
        return self.soft.disabled()

    def adapter_names(self) -> list[str]:
        return []  # no LoRA adapter: the prompts go into the resume state as method tensors

    def state_dict(self):
        return {f"prompts.{k}": v.detach().clone() for k, v in self.prompts.state_dict().items()}

    def load_state_dict(self, state):
        own = {k[8:]: v for k, v in state.items() if k.startswith("prompts.")}
        if own:
            with torch.no_grad():
                for k, v in self.prompts.state_dict().items():
                    v.copy_(own[k])


@register
class ProgressivePrompts(PromptMethod):
    """One soft prompt per task, earlier prompts frozen and concatenated behind the new one."""

    name = "pp"
    title = "Progressive Prompts (PP)"
    reference = "Razdaibiedin et al. 2023, 'Progressive Prompts: Continual Learning for Language Models'"
    defaults = {"prefix_length": 20, "mlp_bottleneck": 128}  # the seed code's pp_prefix_length and ResMLP width
    bounds = {"prefix_length": (1, 4096), "mlp_bottleneck": (0, 65536)}

    def build(self, model, seed):
        n, length, width = len(self.ctx.tasks), int(self.args["prefix_length"]), int(self.args["mlp_bottleneck"])
        hidden = model.config.hidden_size
        module = torch.nn.Module()
        g = torch.Generator().manual_seed(seed + 31337)
        module.prompt = torch.nn.ParameterList(torch.nn.Parameter(vocab_init(model, length, g)) for _ in range(n))
        with torch.random.fork_rng(devices=[]):  # the global RNG stream stays as for the other methods
            torch.manual_seed(seed + 31338)
            module.mlp = torch.nn.ModuleList(
                torch.nn.Sequential(torch.nn.Linear(hidden, width), torch.nn.ReLU(), torch.nn.Linear(width, hidden))
                for _ in range(n if width else 0))
        module.register_buffer("used", torch.zeros((), dtype=torch.long))  # prompts in the input: phase + 1
        for p in module.parameters():
            p.requires_grad_(False)
        return module.to(model.get_input_embeddings().weight.device)

    def task_prompt(self, k: int) -> torch.Tensor:
        """P_k as it enters the input: through its residual MLP when there is one."""
        p = self.prompts.prompt[k]
        return p + self.prompts.mlp[k](p) if len(self.prompts.mlp) else p

    def begin_task(self, phase, task_ids):
        self.prompts.used.fill_(phase + 1)
        for k, p in enumerate(self.prompts.prompt):
            p.requires_grad_(k == phase)
        for k, m in enumerate(self.prompts.mlp):
            m.requires_grad_(k == phase)

    def concatenated(self) -> torch.Tensor:
        """[P_k; …; P_0] for the k + 1 prompts in use (only the newest one carries gradients)."""
        k = int(self.prompts.used) - 1
        newest = self.task_prompt(k)
        with torch.no_grad():
            older = [self.task_prompt(j) for j in range(k - 1, -1, -1)]
        return torch.cat([newest, *older])

    def prefix(self, input_ids, attention_mask):
        p = self.concatenated()
        return p.unsqueeze(0).expand(attention_mask.shape[0], *p.shape)

    def save_task(self, out_dir, meta):
        with torch.no_grad():
            prompt = self.concatenated()
        if is_main_process():  # every process calls save_task; one writes
            write_prompt_dir(self.ctx.peft, prompt, Path(out_dir), meta)


@register
class L2P(PromptMethod):
    """Learning to Prompt: a shared pool of prompts with learned keys, chosen per example by a frozen query."""

    name = "l2p"
    title = "Learning to Prompt (L2P)"
    reference = "Wang et al. 2022, 'Learning to Prompt for Continual Learning'"
    # the seed code's l2p_pool_size, l2p_prompt_length, its top_k and its key-matching weight
    defaults = {"pool_size": 10, "prompt_length": 5, "top_n": 3, "key_weight": 0.5}
    bounds = {"pool_size": (1, 100_000), "prompt_length": (1, 4096), "top_n": (1, 100_000), "key_weight": (0.0, 1e6)}

    @classmethod
    def check_args(cls, args):
        super().check_args(args)
        merged = {**cls.defaults, **args}
        if merged["top_n"] > merged["pool_size"]:
            raise MclError(f"method_args.top_n (l2p) must be <= pool_size ({merged['pool_size']}), got {merged['top_n']}")

    def build(self, model, seed):
        pool, length = int(self.args["pool_size"]), int(self.args["prompt_length"])
        module = torch.nn.Module()
        g = torch.Generator().manual_seed(seed + 31337)
        module.prompt = torch.nn.Parameter(vocab_init(model, pool * length, g).view(pool, length, -1))
        module.key = torch.nn.Parameter(torch.rand(pool, model.config.hidden_size, generator=g) * 2 - 1)
        for p in module.parameters():
            p.requires_grad_(False)
        return module.to(model.get_input_embeddings().weight.device)

    def begin_task(self, phase, task_ids):
        for p in self.prompts.parameters():  # one pool for every task: always trained
            p.requires_grad_(True)

    @torch.no_grad()
    def query(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The frozen model's final hidden state, averaged over each row's input (prompt) positions."""
        keep = current_input_mask(attention_mask).unsqueeze(-1)
        with self.soft.disabled():
            hidden = self.ctx.peft.get_decoder()(input_ids=input_ids, attention_mask=attention_mask,
                                                 use_cache=False).last_hidden_state
        return (hidden * keep).sum(1) / keep.sum(1).clamp(min=1)

    def select(self, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(indices of the top_n keys by cosine similarity to q, their similarities), per row."""
        sim = torch.nn.functional.normalize(q.float(), dim=-1) @ torch.nn.functional.normalize(self.prompts.key, dim=-1).T
        idx = sim.detach().topk(int(self.args["top_n"]), dim=1).indices
        return idx, sim.gather(1, idx)

    def prefix(self, input_ids, attention_mask):
        idx, sim = self.select(self.query(input_ids, attention_mask))
        self.match = (1.0 - sim).sum(1).mean()  # L2P's surrogate loss: pull the chosen keys towards the query
        chosen = self.prompts.prompt[idx]  # (batch, top_n, length, hidden)
        return chosen.flatten(1, 2)

    def loss(self, batch, task_ids):
        ce = self.ctx.loss_fn(self.ctx.model, batch)
        self.terms = {"ce": ce.detach(), "key_match": self.match.detach()}
        return ce + float(self.args["key_weight"]) * self.match

    def log_values(self):
        """The CE and the key-matching term of the last step."""
        return {k: float(v) for k, v in getattr(self, "terms", {}).items()}

    def save_task(self, out_dir, meta):
        from mcl.models import base_model_id

        if not is_main_process():  # every process calls save_task; one writes
            return
        record = {"method": "l2p", **{k: self.args[k] for k in ("pool_size", "prompt_length", "top_n")},
                  "query": "mean final hidden state of the frozen base model over the input (prompt) tokens",
                  "input": "[chosen prompts in key order; x]"}
        with atomic_path(Path(out_dir)) as tmp:
            tmp.mkdir()
            save_file({"prompt": self.prompts.prompt.detach().float().cpu().contiguous(),
                       "key": self.prompts.key.detach().float().cpu().contiguous()}, tmp / POOL, metadata={"format": "pt"})
            write_json_atomic(tmp / "l2p.json", record)
            write_json_atomic(tmp / "mcl.json", {"base_model": base_model_id(self.ctx.peft), **meta,
                                                 "sha256": sha256_file(tmp / POOL)})
