"""SeqFT: vanilla sequential LoRA fine-tuning, one adapter trained task after task (the lower bound)."""

from mcl.train.methods.base import Method, register


@register
class Seq(Method):
    """Sequential fine-tuning: the base class's behaviour, named."""

    name = "seq"
    title = "Sequential fine-tuning (SeqFT)"
    reference = "baseline in Ren et al. 2024 and TRACE (Wang et al. 2023)"
