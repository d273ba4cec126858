"""Attribution: the group that differs carries the whole barrier; a group that does not move stays flat."""

import copy

import pytest
import torch
from peft import LoraConfig, get_peft_model

from mcl.adapters import AdapterState, get_state
from mcl.analysis import evaluators, path_barriers, sweep
from mcl.analysis.attribution import attribute, groups
from mcl.errors import MclError
from mcl.paths import Linear


def random_adapter(model, seed):
    peft = get_peft_model(copy.deepcopy(model), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "up_proj"]))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in peft.named_parameters():
            if "lora_" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    config = {k: v for k, v in peft.peft_config["default"].to_dict().items() if k != "runtime_config"}
    return AdapterState(config, get_state(peft))


def test_groups_partition_the_tensors(tiny_llama):
    a = random_adapter(tiny_llama, 1)
    layers, modules = groups(a, "layers"), groups(a, "modules")
    assert list(layers) == ["layer 0", "layer 1"] and set(modules) == {"q_proj", "v_proj", "up_proj"}
    for g in (layers, modules):
        assert sorted(k for keys in g.values() for k in keys) == sorted(a.tensors)
    with pytest.raises(MclError, match="unknown attribution grouping"):
        groups(a, "heads")


def test_only_the_layer_that_changes_makes_the_barrier(tiny_llama, tiny_tokenizer, write_task_dir):
    rows = [{"prompt": f"item {i} is", "answer": w} for i, w in enumerate("red blue cat dog sun moon".split())]
    tasks = evaluators(tiny_tokenizer, [str(write_task_dir("pick", {"eval": rows}, spec={"metric": "accuracy"}))])
    a, other = random_adapter(tiny_llama, 1), random_adapter(tiny_llama, 2)
    b = AdapterState(a.config, {k: -3 * other.tensors[k] if ".layers.0." in k else v for k, v in a.tensors.items()})
    path = Linear(a, b, space="factors")
    table = attribute(path, tiny_llama, tasks, "layers", "a", points=5, cache=False).set_index("group")
    full = path_barriers(sweep(path, tiny_llama, tasks, 5, cache=False, progress=False))["pick"]["barrier"]["loss"]
    assert table.loc["layer 1", "loss_range"] == 0.0
    assert table.loc["layer 0", "max_minus_linear"] == pytest.approx(full["max_minus_linear"], abs=1e-6)
    assert full["max_minus_linear"] > 0 or table.loc["layer 0", "loss_range"] > 0
