"""Analysis spread over processes: the rank and world size a launcher sets, and the one collective the work needs.

Under `torchrun --nproc_per_node=N` or `accelerate launch` (which set WORLD_SIZE, RANK and LOCAL_RANK),
`ranks()` joins a gloo process group on first use; each process then takes every N-th unit of work
(`Ranks.share`) and `run_shared` hands every process all processes' results, in rank order, so every
process goes on with the same numbers and only the main one writes. Results travel as JSON (exact for
floats; no pickle) in byte tensors on the CPU over gloo whatever device the model is on, so the same
code runs on CPUs and GPUs. A failure in one process fails all of them with its message. With
one process (no WORLD_SIZE, or 1) nothing is joined and every helper returns its input: behaviour,
numbers and files are exactly those of a plain run.
"""

from __future__ import annotations

import atexit
import json
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable

from mcl.errors import MclError

_GROUP: Any = None  # the gloo group the collectives use, once joined


@dataclass(frozen=True)
class Ranks:
    """This process's place among the launched ones: rank, world size and rank on its node."""

    rank: int = 0
    world: int = 1
    local: int = 0

    @property
    def main(self) -> bool:
        """Whether this is the process that prints and writes (rank 0)."""
        return self.rank == 0

    def share(self, n: int) -> range:
        """The indices of n units of work this process takes: every world-th one, from its rank."""
        return range(self.rank, n, self.world)


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    try:
        return int(value) if value.strip() else default
    except ValueError:
        raise MclError(f"environment variable {name}={value!r} is not an integer (set by torchrun)") from None


def launched() -> Ranks:
    """The rank and world size from the launcher's environment, without joining a process group.

    Without WORLD_SIZE above 1 this is the one process of a plain run, whatever else the environment says.
    """
    world = _env_int("WORLD_SIZE", 1)
    if world <= 1:
        return Ranks()
    rank = _env_int("RANK", 0)
    if not 0 <= rank < world:
        raise MclError(f"RANK={rank} and WORLD_SIZE={world} from the environment do not fit (0 <= RANK < WORLD_SIZE)")
    return Ranks(rank, world, _env_int("LOCAL_RANK", rank))


def ranks() -> Ranks:
    """This process's Ranks; under a launcher with several processes, joins their gloo group on first call."""
    here = launched()
    if here.world > 1:
        _join()
    return here


def _join() -> None:
    global _GROUP
    if _GROUP is not None:
        return
    import torch.distributed as dist

    if not dist.is_initialized():  # a process may wait long for its peers' last units (generation on a 7B model);
        dist.init_process_group("gloo", timeout=timedelta(hours=6))  # torchrun ends them all when one dies
        atexit.register(dist.destroy_process_group)
        _GROUP = dist.group.WORLD
    else:  # joined by someone else (accelerate): reuse it when it speaks gloo, else add a gloo group beside it
        _GROUP = dist.group.WORLD if "gloo" in str(dist.get_backend()) else dist.new_group(backend="gloo")


def run_shared(work: Callable[[], Any], here: Ranks) -> list[Any]:
    """Every process's result of `work()` in rank order (on every process); one process's failure fails all.

    Results must be JSON-able; with several processes they come back through JSON (tuples as lists). The
    failing process re-raises its own exception; the others raise a one-line MclError naming it.
    """
    if here.world == 1:
        return [work()]
    try:
        result, error = work(), None
    except Exception as e:  # noqa: BLE001  (re-raised below, after the peers learnt of it)
        result, error = None, e
    said = None if error is None else str(error) if isinstance(error, MclError) else f"{type(error).__name__}: {error}"
    gathered = _all_gather_json([result, said], here)
    if error is not None:
        raise error
    for rank, (_, message) in enumerate(gathered):
        if message is not None:
            raise MclError(f"process {rank} of {here.world} failed: {message}")
    return [r for r, _ in gathered]


def _plain(value: Any) -> Any:
    """numpy / torch scalars and arrays as plain Python values (json.dumps' fallback)."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON-able")


def _all_gather_json(obj: Any, here: Ranks) -> list[Any]:
    """Every process's JSON-able `obj`, in rank order (tuples come back as lists)."""
    import torch
    import torch.distributed as dist

    data = torch.frombuffer(bytearray(json.dumps(obj, default=_plain).encode()), dtype=torch.uint8)
    sizes = [torch.zeros(1, dtype=torch.long) for _ in range(here.world)]
    dist.all_gather(sizes, torch.tensor([data.numel()]), group=_GROUP)
    padded = torch.zeros(max(int(n) for n in sizes), dtype=torch.uint8)
    padded[: data.numel()] = data
    buffers = [torch.empty_like(padded) for _ in range(here.world)]
    dist.all_gather(buffers, padded, group=_GROUP)
    return [json.loads(b[: int(n)].numpy().tobytes()) for b, n in zip(buffers, sizes)]


def rank_device(device: str) -> str:
    """The device this process uses: with several processes, a plain `cuda` becomes this process's GPU.

    That is `cuda:LOCAL_RANK` modulo the GPUs the process sees (one each when the launcher restricts
    CUDA_VISIBLE_DEVICES).
    """
    here = launched()
    if device != "cuda" or here.world == 1:
        return device
    import torch

    return f"cuda:{here.local % max(1, torch.cuda.device_count())}"
