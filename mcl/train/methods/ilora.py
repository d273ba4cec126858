"""I-LoRA (Ren et al. 2024): a fast LoRA learner and a slow one that follows it along the linear path.

Both adapters live on one base model (`fast`, `slow`; the slow one never gets gradients). After
every optimizer step, with probability `update_prob`, slow ← point(1−λ_k) of the linear path from
slow to fast in `space` (factor space by default), λ_k = min(1 − 1/(k+1), λ) with k the optimizer
step counted from 1 (CLS-ER warm-up: it counts steps, not updates).
Once the reservoir buffer holds earlier tasks: loss = CE(current, replay) + γ·MSE(H_fast, Z) on the
replay batch's non-padding positions of the selected layers, with Z = max(H_fast, H_slow) (released
code) or H_slow. The R matrix uses the slow learner (`inference`), the fast one is reported beside it.
`snapshot_every: N` (opt-in) also saves both learners every N steps as PEFT dirs
`tasks/<k>-<task>/snapshots/step-<s>/{fast,slow}/`, the trajectories a loss-plane figure draws.
The step is lean: the slow update is one fused multi-tensor lerp over all LoRA tensors (`lerp_states_`,
the factor-space Linear formula of mcl.paths), the slow forward skips padding by length groups
(`slow_states`), and the consistency loss sums one layer at a time over the non-padding positions (no
concatenation over layers, no fp32 copy, nothing but references to the states kept for backward), with no
host sync.
`placement: search` (a variant no anchor has) keeps the slow learner fixed during a task and, at its
end, places it where mcl's path search finds the lowest loss on slow → fast: a coarse grid and a bounded
Brent search (as `mcl-barrier --points auto`) over t, minimising the slow learner's CE on the replay
buffer plus on a held-out slice of the current task's train split (`placement_holdout`, taken out of
training; never eval or test data). Each choice is written to metrics/placement-<k>.json.
The README's "I-LoRA in mcl" section lists the released code's defects this file avoids, each pinned by a test.
"""

from __future__ import annotations

import torch

from mcl.adapters import add_lora, lora_parameters, save_adapter
from mcl.data.tokenize import Encoded, collate, text_meta
from mcl.errors import MclError
from mcl.io import write_json_atomic
from mcl.paths import lerp_states_
from mcl.train.data import length_buckets
from mcl.train.losses import answer_ce, head_at, label_positions, squared_gap, to_device
from mcl.train.methods.base import active_adapter, copy_adapter, freeze_adapter, register
from mcl.train.methods.er import ER
from mcl.train.parallel import local

TARGETS = ("max", "slow")


@register
class ILoRA(ER):
    """Interpolation-based LoRA: EMA slow learner on the linear path + replay + consistency."""

    name = "ilora"
    title = "I-LoRA (mcl defaults)"
    reference = "Ren et al. 2024, 'Analyzing and Reducing Catastrophic Forgetting in Parameter Efficient Tuning'"
    defaults = {
        "ema_lambda": "auto",
        "update_prob": 1.0,
        "space": "factors",
        "consistency_weight": 1.0,
        "consistency_target": "max",
        "layers": "all",
        "replay_weighting": "mean",
        "buffer_size": 500,
        "inference": "slow",
        "snapshot_every": 0,
        "consistency_on": "hidden",
        "placement": "ema",
        "placement_holdout": 0.1,
        "placement_examples": 64,
    }
    # keys added after runs were made: left out of method.json at their default, so those runs resume
    added = {"snapshot_every": 0, "consistency_on": "hidden", "placement": "ema", "placement_holdout": 0.1,
             "placement_examples": 64}
    choices = {**ER.choices, "consistency_target": TARGETS, "inference": ("slow", "fast"), "space": ("factors",),
               "consistency_on": ("hidden", "logits"), "placement": ("ema", "search")}
    bounds = {**ER.bounds, "update_prob": (0.0, 1.0), "placement_holdout": (0.01, 0.5), "placement_examples": (1, 1e9)}
    window = 0.10  # the README's rule: the slow learner's averaging window 1/(1−λ) ≤ 10 % of a task's steps
    replay_positions = True  # the slow forward's length groups and the consistency loss's gather

    @classmethod
    def check_args(cls, args):
        super().check_args(args)
        lam = args.get("ema_lambda", "auto")
        if lam != "auto" and (isinstance(lam, bool) or not isinstance(lam, (int, float)) or not 0.0 <= lam <= 1.0):
            raise MclError(f"method_args.ema_lambda ({cls.name}) must be 'auto' or a number in [0, 1], got {lam!r}")
        layers = args.get("layers", "all")
        if layers not in ("all", "last") and not (isinstance(layers, list) and layers and all(
                isinstance(i, int) and not isinstance(i, bool) for i in layers)):
            raise MclError(f"method_args.layers ({cls.name}) must be 'all', 'last' or a list of layer indices, got {layers!r}")

    def __init__(self, ctx, **args):
        super().__init__(ctx, **args)
        self.snapshot_every = int(self.args["snapshot_every"])
        if self.snapshot_every < 0:
            raise MclError("snapshot_every must be >= 0 (0: no snapshots)")
        self.consistency_on = self.args["consistency_on"]
        self.placement = self.args["placement"]
        self.placement_examples = int(self.args["placement_examples"])
        if self.placement == "search" and ctx.sharded:
            raise MclError("ilora placement: search does not run with train.fsdp (each process's search runs its own "
                           "number of forwards); use placement: ema or train.fsdp: false")
        self.holdout = self.hold_out(ctx, float(self.args["placement_holdout"])) if self.placement == "search" else {}
        for key, default in self.added.items():  # at their default: not pinned, so runs made before them resume
            if self.args[key] == default:
                del self.args[key]
        self.phase: tuple[int, str] = (0, "")  # (index, task name) of the phase being trained
        if self.args["consistency_target"] not in TARGETS:
            raise MclError(f"consistency_target must be one of {TARGETS}")
        if self.args["inference"] not in ("slow", "fast"):
            raise MclError("inference must be 'slow' or 'fast'")
        self.args["ema_lambda"] = self.resolve_lambda(ctx, self.args["ema_lambda"])
        if not 0.0 <= float(self.args["update_prob"]) <= 1.0:
            raise MclError("update_prob must lie in [0, 1]")
        if self.args["space"] != "factors":
            raise MclError("ilora supports space=factors only: a delta-space step would grow the slow adapter's rank")
        other = "fast" if self.args["inference"] == "slow" else "slow"
        self.views = (self.args["inference"], other)
        self.steps = 0  # optimizer steps taken, over the whole run (the warm-up counter k)
        self.update_rng = torch.Generator().manual_seed(ctx.config.train.seed + 2)

    def check_base(self, base_model):
        """Layer indices must name decoder layers of the base model (Python's negative indices count from the end)."""
        n, choice = base_model.config.num_hidden_layers, self.args["layers"]
        if isinstance(choice, list) and (bad := [i for i in choice if not -n <= i < n]):
            raise MclError(f"method_args.layers ({self.name}) {bad} out of range: the model has {n} decoder layers "
                           f"(indices 0..{n - 1}, or -{n}..-1 from the end)")

    def setup(self, base_model, spec, seed):
        model = add_lora(base_model, spec, "fast", seed=seed)
        with torch.random.fork_rng(devices=[]):  # the global RNG stream stays as for a one-adapter method
            add_lora(model, spec, "slow")
        copy_adapter(model, "fast", "slow")  # both learners start at the same point
        model.base_model.set_adapter("fast")
        freeze_adapter(model, "slow")
        freeze_adapter(model, "fast", frozen=False)
        return model

    # --- slow learner ------------------------------------------------------------------------
    @classmethod
    def resolve_lambda(cls, ctx, value) -> float:
        """λ for this run: 'auto' → the slowest λ whose window 1/(1−λ) is ≤ 10 % of the shortest task's steps.

        The choice is printed; an explicit λ whose window is longer gets a one-line warning (the slow learner
        would then lag the fast one at every evaluation).
        """
        steps = cls.shortest_phase(ctx)
        if steps is None:  # outside a run (tests building the method by hand)
            return 0.99 if value == "auto" else float(value)
        if value == "auto":
            lam = max(0.0, 1.0 - 1.0 / (cls.window * steps)) if cls.window * steps > 1 else 0.0
            ctx.accelerator.print(f"{cls.name}: ema_lambda auto = {lam:.4g} (averaging window {1 / (1 - lam):.3g} steps, "
                                  f"≤ {cls.window:.0%} of the shortest task's {steps} steps)")
            return lam
        lam = float(value)
        if lam == 1.0 or 1.0 / (1.0 - lam) > max(1.0, cls.window * steps) * (1 + 1e-9):  # 1 step: the shortest window
            ctx.accelerator.print(f"warning: {cls.name} ema_lambda {lam:g} averages over {1 / (1 - lam) if lam < 1 else float('inf'):.3g} "
                                  f"steps, more than {cls.window:.0%} of the shortest task's {steps} steps: the slow "
                                  f"learner will lag the fast one at every evaluation (leave ema_lambda unset for 'auto')")
        return lam

    @staticmethod
    def shortest_phase(ctx) -> int | None:
        """Optimizer steps of the run's shortest task (None without a run config and data)."""
        if ctx.config is None or not ctx.train_data:
            return None
        sizes = [len(d.train) for d in ctx.train_data]
        world = ctx.accelerator.num_processes
        return min(ctx.config.train.phase_steps(sizes, [i], world) for i in range(len(sizes)))

    def current_lambda(self) -> float:
        """λ_k = min(1 − 1/(k+1), λ) at optimizer step k, counted from 1 (CLS-ER warm-up)."""
        return min(1.0 - 1.0 / (self.steps + 1), float(self.args["ema_lambda"]))

    @torch.no_grad()
    def update_slow(self) -> None:
        """slow ← point(1 − λ_k) on the factor-space linear path slow → fast, one fused in-place lerp."""
        slow, fast = self._learners
        lerp_states_(slow, fast, 1.0 - self.current_lambda())

    def begin_task(self, phase, task_ids):
        super().begin_task(phase, task_ids)
        self.phase = (phase, "+".join(self.ctx.tasks[i] for i in task_ids))

    def after_step(self, batch, task_ids, step):
        self.steps += 1
        p = float(self.args["update_prob"])  # placement "search": the slow learner stays where the last search put it
        moves = self.placement == "ema" and (p >= 1.0 or torch.rand((), generator=self.update_rng) < p)
        if moves:
            self.update_slow()
        super().after_step(batch, task_ids, step)
        if self.snapshot_every and (step + 1) % self.snapshot_every == 0:
            self.save_snapshot(step + 1)

    def save_snapshot(self, step: int) -> None:
        """Write the fast and slow adapters after `step` of this phase under the task dir (the main process writes)."""
        if self.ctx.run_dir is None:
            return
        phase, task = self.phase
        out = self.ctx.run_dir / "tasks" / f"{phase}-{task}" / "snapshots" / f"step-{step:06d}"
        self.save_task(out, {"task": task, "phase": phase, "method": self.name,
                             "step": step, "snapshot": True, **text_meta(self.ctx.config.text)})

    # --- placement by the analysis (placement: search) ------------------------------------------
    @staticmethod
    def hold_out(ctx, fraction: float) -> dict[int, list]:
        """Take a seeded `fraction` of every task's train split out of training; return it by task index."""
        held: dict[int, list] = {}
        for i, d in enumerate(ctx.train_data):
            n = len(d.train)
            k = min(max(1, round(fraction * n)), n - 1)
            if k < 1:
                continue
            g = torch.Generator().manual_seed(ctx.config.train.seed * 7919 + i)
            out = set(torch.randperm(n, generator=g)[:k].tolist())
            held[i] = [d.train[j] for j in sorted(out)]
            d.train = [d.train[j] for j in range(n) if j not in out]
        return held

    def placement_objective(self, task_ids: list[int]):
        """f(t): token-mean CE of the slow learner at point t of slow → fast on the replay buffer, plus the same on
        the held-out train slice of the current task(s) (never eval or test data); summed over processes."""
        pad, device, size = self.ctx.tokenizer.pad_token_id, self.ctx.accelerator.device, self.ctx.config.train.batch_size
        groups = [[Encoded(ids, labels) for ids, labels, _ in self.buffer.items[: self.placement_examples]],
                  [ex for i in task_ids for ex in self.holdout.get(i, [])]]
        batches = [[to_device(collate(g[s : s + size], pad), device) for s in range(0, len(g), size)] for g in groups]
        slow, fast = self._learners
        start = [x.clone() for x in slow]

        @torch.no_grad()
        def f(t: float) -> float:
            torch._foreach_copy_(slow, start)
            lerp_states_(slow, fast, float(t))
            sums = torch.zeros(len(batches), 2, dtype=torch.float64, device=device)
            with active_adapter(self.ctx.peft, "slow"):
                for k, group in enumerate(batches):
                    for b in group:
                        loss_sum, n, _ = answer_ce(self.ctx.peft, b)
                        sums[k, 0] += loss_sum.double()
                        sums[k, 1] += n
            if self.ctx.accelerator.num_processes > 1:
                sums = self.ctx.accelerator.reduce(sums, reduction="sum")
            return float(sum(s[0] / s[1] for s in sums if s[1] > 0))

        return f, start

    def end_task(self, phase, task_ids):
        super().end_task(phase, task_ids)
        if self.placement != "search":
            return
        from scipy.optimize import minimize_scalar

        f, start = self.placement_objective(task_ids)
        seen: dict[float, float] = {}

        def cached(t: float) -> float:
            t = round(float(t), 6)
            if t not in seen:
                seen[t] = f(t)
            return seen[t]

        for t in (0.0, 0.25, 0.5, 0.75, 1.0):  # coarse grid, then a bounded Brent search in the best bracket
            cached(t)
        best = min(seen, key=seen.get)
        minimize_scalar(cached, bounds=(max(0.0, best - 0.25), min(1.0, best + 0.25)), method="bounded",
                        options={"xatol": 0.01})
        t_star = min(seen, key=seen.get)
        slow, fast = self._learners
        with torch.no_grad():
            torch._foreach_copy_(slow, start)
            lerp_states_(slow, fast, t_star)
        record = {"phase": phase, "t": t_star, "objective": seen[t_star],
                  "evaluations": [{"t": t, "objective": v} for t, v in sorted(seen.items())]}
        self.ctx.accelerator.print(f"placement after {self.phase[1]}: slow learner at t = {t_star:.3f} of slow → fast "
                                   f"(objective {seen[t_star]:.4f}, {len(seen)} evaluations)")
        if self.ctx.run_dir is not None and self.ctx.accelerator.is_main_process:
            write_json_atomic(self.ctx.run_dir / "metrics" / f"placement-{phase}.json", record)

    @property
    def _learners(self) -> tuple[list[torch.nn.Parameter], list[torch.nn.Parameter]]:
        """The live slow and fast LoRA parameters, paired key by key.

        Looked up once and kept on the model as parameter objects, never as detached views: a preparation
        that gives parameters new storage (DDP on CPU, FSDP's lazy init) cannot orphan them, and preparing
        drops the cache (mcl.train.parallel.drop_caches).
        """
        peft = self.ctx.peft
        if "_mcl_learners" not in peft.__dict__:
            slow, fast = (lora_parameters(peft, name) for name in ("slow", "fast"))
            peft.__dict__["_mcl_learners"] = ([slow[k] for k in slow], [fast[k] for k in slow])
        return peft.__dict__["_mcl_learners"]

    # --- loss --------------------------------------------------------------------------------
    def _select(self, hidden: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
        layers = hidden[1:]  # decoder layer outputs (index 0 is the embedding output)
        choice = self.args["layers"]
        if choice == "all":
            return list(layers)
        if choice == "last":
            return [layers[-1]]
        return [layers[int(i)] for i in choice]

    def consistency(self, h_fast: list[torch.Tensor], h_slow: list[torch.Tensor], mask: torch.Tensor,
                    valid: torch.Tensor | None = None) -> torch.Tensor:
        """Mean squared error between fast states and Z over non-padding positions of the selected layers.

        One layer at a time (`squared_gap`), over the non-padding positions only (`valid`: flat indices into
        batch × length, found from `mask` when not given): with Z = max(H_fast, H_slow), H_fast − Z = min(d, 0)
        for d = H_fast − H_slow (same value and gradient, Z being a constant); with Z = H_slow it is d. Sums in
        fp32, no copy of the states kept for backward, no host sync when `valid` comes with the batch.
        """
        if valid is None:
            valid = mask.flatten().nonzero().squeeze(1)
        negative_only = self.args["consistency_target"] == "max"
        total = torch.stack([squared_gap(f, s, valid, negative_only) for f, s in zip(h_fast, h_slow)]).sum()
        return total / max(len(h_fast) * valid.numel() * h_fast[0].shape[-1], 1)

    @torch.no_grad()
    def slow_states(self, replay: dict) -> list[torch.Tensor]:
        """The slow learner's selected hidden states on the replay batch, (batch, length, hidden) each.

        On a CPU, where the forward is compute-bound, rows run in two length groups when that skips at least
        5% of the padded positions (a GPU step is bound by kernel launches at small scale, so it splits only
        at 25%); each row's states at its own positions are the same either way (right padding, causal model).
        The LM head is skipped (`head_at` no position): HF's `logits_to_keep=1` slices a non-contiguous last
        column, which torch multiplies by a batch-expanded copy of the head's weight (batch × vocab × hidden).
        """
        ids, mask = replay["input_ids"], replay["attention_mask"]
        lengths = replay["lengths"] if "lengths" in replay else mask.sum(1).tolist()
        if self.ctx.sharded:  # forwards are collective: every process runs one, whatever its lengths
            groups = [(list(range(len(lengths))), ids.shape[1])]
        else:
            groups = length_buckets(lengths, 0.05 if ids.device.type == "cpu" else 0.25)
        states = None
        no_rows = torch.empty(0, dtype=torch.long, device=ids.device)  # the LM head runs on no position at all
        with active_adapter(self.ctx.peft, "slow"), head_at(self.ctx.peft, no_rows):
            for rows, width in groups:
                pick = slice(None) if len(groups) == 1 else torch.tensor(rows, device=ids.device)
                out = self.ctx.peft(input_ids=ids[pick, :width], attention_mask=mask[pick, :width],
                                    output_hidden_states=True, use_cache=False)
                hidden = self._select(out.hidden_states)
                if len(groups) == 1:
                    return hidden
                if states is None:
                    states = [h.new_zeros(ids.shape + h.shape[-1:]) for h in hidden]
                for full, h in zip(states, hidden):
                    full[pick, :width] = h
        return states

    def logit_consistency(self, fast_logits: torch.Tensor, replay: dict) -> torch.Tensor:
        """The consistency loss on output logits instead of hidden states, at the replay batch's label positions.

        Both learners' logits are taken where the head already runs for the replay CE (`label_at`: the positions
        that predict a label token, one row of logits each); Z = max(fast, slow) or slow as for hidden states.
        """
        at = replay["label_at"] if "label_at" in replay else label_positions(replay["labels"])
        with torch.no_grad(), active_adapter(self.ctx.peft, "slow"), head_at(self.ctx.peft, at):
            slow = self.ctx.peft(input_ids=replay["input_ids"], attention_mask=replay["attention_mask"],
                                 use_cache=False).logits
        d = fast_logits - slow
        if self.args["consistency_target"] == "max":
            d = d.clamp(max=0)
        return d.float().square().sum() / max(d.numel(), 1)

    def loss(self, batch, task_ids):
        cur = answer_ce(self.ctx.model, batch)[:2]
        replay = self.replay_batch(task_ids, len(batch["input_ids"]))
        if replay is None:
            return self.combine(cur, None)
        gamma = float(self.args["consistency_weight"])
        on_hidden = bool(gamma) and self.consistency_on == "hidden"
        s, n, out = answer_ce(self.ctx.model, replay, output_hidden_states=on_hidden)
        loss = self.combine(cur, (s, n))
        if gamma:
            if on_hidden:
                fast = self._select(out.hidden_states)
                del out  # the replay logits are not needed past the CE: free them before the slow forward
                term = self.consistency(fast, self.slow_states(replay), replay["attention_mask"], replay.get("valid"))
            else:
                term = self.logit_consistency(out.logits, replay)
            self.terms["consistency"] = term.detach()
            loss = loss + gamma * term
        return loss

    @torch.no_grad()
    def log_values(self):
        """ER's CE terms, the consistency term when the step stored it in `terms`, and ‖slow − fast‖ (factors)."""
        slow, fast = self._learners
        square = torch.stack([(local(s) - local(f)).float().pow(2).sum() for s, f in zip(slow, fast)]).sum()
        if self.ctx.sharded:  # each process holds its shards of both learners
            torch.distributed.all_reduce(square)
        return {**super().log_values(), "slow_fast_dist": float(square.sqrt())}

    # --- evaluation, checkpoints, resume -----------------------------------------------------
    def eval_view(self, view, task_index, phase):
        return active_adapter(self.ctx.peft, view)

    def save_task(self, out_dir, meta):
        for name in ("fast", "slow"):
            save_adapter(self.ctx.peft, out_dir / name, name, {**meta, "learner": name})

    def state_dict(self):
        state = super().state_dict()
        state["ilora.steps"] = torch.tensor([self.steps])
        state["ilora.update_rng"] = self.update_rng.get_state()
        return state

    def load_state_dict(self, state):
        super().load_state_dict(state)
        if "ilora.steps" in state:
            self.steps = int(state["ilora.steps"][0])
            self.update_rng.set_state(state["ilora.update_rng"])


@register
class ILoRAReleased(ILoRA):
    """The released code's intended settings (λ = 0.25, γ = 1, max target, all layers, fast at inference)."""

    name = "ilora-released"
    title = "I-LoRA, released-code preset"
    defaults = {**ILoRA.defaults, "ema_lambda": 0.25, "consistency_weight": 1.0, "consistency_target": "max",
                "layers": "all", "inference": "fast"}


@register
class ILoRAAsReleased(ILoRA):
    """What the released code actually runs: the slow learner never moves from the base model.

    Its EMA update matches no parameter name (shared/ILORA.md, defect 1), so the slow adapter keeps its
    initial ΔW = 0 and the consistency target is max(H_fast, H_base), a fixed floor; the fast learner is scored.
    """

    name = "ilora-as-released"
    title = "I-LoRA as released (slow learner stuck at the base model)"
    defaults = {**ILoRA.defaults, "ema_lambda": 0.25, "update_prob": 0.0, "consistency_weight": 1.0,
                "consistency_target": "max", "layers": "all", "inference": "fast"}

    def setup(self, base_model, spec, seed):
        model = super().setup(base_model, spec, seed)
        with torch.no_grad():  # ΔW_slow = 0 exactly (B = 0): the slow learner is the base model
            for k, p in lora_parameters(model, "slow").items():
                if ".lora_B." in k:
                    p.zero_()
        return model
