"""MTL: joint training on all tasks at once, the upper bound of sequential methods.

One phase over the union of the tasks' training data, with the same total step budget
(steps_per_task × number of tasks); its R matrix has a single row.
"""

from mcl.train.methods.base import Method, register


@register
class MTL(Method):
    """Multi-task learning: one LoRA trained on every task jointly."""

    name = "mtl"
    title = "Multi-task learning (MTL)"
    reference = "upper bound in Ren et al. 2024 and TRACE"

    def phases(self, n_tasks):
        return [list(range(n_tasks))]
