"""`LoraSpec`: the LoRA hyper-parameters of a run (config key `lora`), without torch or peft, so configs load light.

`mcl.adapters.lora` wraps models with it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from mcl.fields import documented

if TYPE_CHECKING:
    from peft import LoraConfig

ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class LoraSpec:
    """LoRA hyper-parameters (defaults measured on the tiny model, see README)."""

    r: int = documented(8, "LoRA rank")
    alpha: float = documented(16.0, "LoRA alpha (PEFT's lora_alpha): the update is scaled by alpha/r (alpha/sqrt(r) "
                                    "with rsLoRA)")
    dropout: float = documented(0.0, "dropout on the LoRA input (PEFT's lora_dropout), in [0, 1)")
    target_modules: list[str] = documented(
        help="linear layers to adapt, by last name; `all-linear` (PEFT's keyword): every linear layer but the "
             "output head", default_factory=lambda: list(ALL_LINEAR))
    use_rslora: bool = documented(False, "rank-stabilised LoRA: scale alpha/sqrt(r)")
    use_dora: bool = documented(False, "DoRA: weight-decomposed LoRA (a learned magnitude per output feature)")

    def to_peft(self) -> "LoraConfig":
        """The equivalent `peft.LoraConfig` for a causal LM."""
        from peft import LoraConfig

        return LoraConfig(
            r=self.r,
            lora_alpha=self.alpha,
            lora_dropout=self.dropout,
            target_modules=self.target_modules if isinstance(self.target_modules, str) else list(self.target_modules),
            use_rslora=self.use_rslora,
            use_dora=self.use_dora,
            task_type="CAUSAL_LM",
        )

    def to_dict(self) -> dict:
        """Plain dict (for configs and sidecars)."""
        return asdict(self)
