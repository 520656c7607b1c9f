"""LoRA merges in a bf16 model: rounds' small updates add up in fp32 master weights instead of rounding away."""

from __future__ import annotations

import copy

import pytest
import torch
from peft import PeftModel, get_peft_model

from sirt.config.defaults import default
from sirt.models.load import char_tokenizer, tiny_llama
from sirt.stages import training

LORA = default("model.lora", r=4, alpha=8)
TINY = default("model.tiny", hidden_size=64, num_layers=1, num_heads=2, intermediate_size=192)
ETA = 1e-5  # std of a round's update per weight: paper 1's lr, where bf16 (step 1.2e-4 near 0.02) rounds it away


def bf16_llama() -> torch.nn.Module:
    """A tiny Llama in bf16: its weights have std 0.02, like a real model's."""
    return tiny_llama(TINY, vocab_size=len(char_tokenizer()), seed=0).to(torch.bfloat16)


def trained(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The weights LoRA trains, in fp32, by name."""
    return {n: p.detach().float().clone() for n, p in model.named_parameters() if "proj" in n}


def weight_name(layer: str) -> str:
    """The base model's name of a LoRA layer's weight (``base_model.model.X`` -> ``X.weight``)."""
    return layer.removeprefix("base_model.model.") + ".weight"


def with_update(model: torch.nn.Module, seed: int) -> tuple[PeftModel, dict[str, torch.Tensor]]:
    """``model`` wrapped with an adapter whose update (B @ A * scaling) is known: random, of std ETA per weight."""
    peft_model = get_peft_model(model, training.lora_config(LORA))
    gen = torch.Generator().manual_seed(seed)
    deltas = {}
    for name, layer in training.lora_layers(peft_model).items():
        A, B = layer.lora_A["default"].weight, layer.lora_B["default"].weight
        A.data = torch.randn(A.shape, generator=gen)
        B.data = torch.randn(B.shape, generator=gen)
        B.data *= ETA / float(training.lora_delta(layer, "default").std())
        deltas[weight_name(name)] = training.lora_delta(layer, "default")
    return peft_model, deltas


def kept(W: dict[str, torch.Tensor], W0: dict[str, torch.Tensor], delta: dict[str, torch.Tensor]) -> float:
    """Share of ``delta`` that ``W`` - ``W0`` holds (its projection on ``delta``)."""
    got = torch.cat([(W[n] - W0[n]).flatten() for n in delta])
    want = torch.cat([d.flatten() for d in delta.values()])
    return float(got @ want / (want @ want))


def masters(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's fp32 master weights by parameter name."""
    master = getattr(model, training.MASTER, None)
    assert master is not None, "the merged bf16 model carries no fp32 master weights"
    return {weight_name(n): w for n, w in master.weights.items()}


def test_a_small_update_survives_the_merge_in_the_fp32_master():
    """One round of std 1e-5: the bf16 weights lose most of it, the master holds it (vs an fp32 reference)."""
    model = bf16_llama()
    W0 = trained(model)
    peft_model, delta = with_update(model, seed=1)
    merged = training.merge_lora(peft_model)
    W = trained(merged)
    assert kept(W, W0, delta) < 0.5  # the bf16 weights alone cannot hold it: most of it rounds away
    master = masters(merged)
    assert kept(master, W0, delta) > 0.95
    errors = torch.cat([(master[n] - W0[n] - delta[n]).flatten() for n in delta])
    assert float(errors.norm()) < 0.05 * float(torch.cat([d.flatten() for d in delta.values()]).norm())
    assert all(torch.equal(W[n], master[n].to(torch.bfloat16).float()) for n in delta)  # the master, rounded once


def test_consecutive_rounds_accumulate_in_the_master():
    """Two rounds below bf16's step: the model is the bf16 rounding of their fp32 sum, not of each in turn."""
    model = bf16_llama()
    W0 = trained(model)
    peft_model, first = with_update(model, seed=1)
    model = training.merge_lora(peft_model)
    peft_model, second = with_update(model, seed=2)
    model = training.merge_lora(peft_model)
    W = trained(model)
    reference = {n: W0[n] + first[n] + second[n] for n in W0}  # both rounds in fp32
    nearest = torch.cat([(W[n] == reference[n].to(torch.bfloat16).float()).flatten() for n in W0])
    assert float(nearest.float().mean()) > 0.999
    after_first = {n: W0[n] + first[n] for n in W0}
    assert kept(masters(model), after_first, second) > 0.95  # the second round's update is not lost


def test_a_weight_changed_between_merges_restarts_its_master():
    """A stale master must not undo a change made outside the merges (it restarts from the weight)."""
    model = bf16_llama()
    peft_model, _ = with_update(model, seed=1)
    model = training.merge_lora(peft_model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01)  # e.g. a full fine-tuning step
    changed = trained(model)
    peft_model, second = with_update(model, seed=2)
    model = training.merge_lora(peft_model)
    assert kept(masters(model), changed, second) > 0.95
    W = trained(model)
    assert all(torch.equal(W[n], (changed[n] + second[n]).to(torch.bfloat16).float()) for n in second)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_sft_saves_the_rounds_adapter_that_it_merges(tmp_path, dtype):
    """The saved adapter is the round's update: fp32 merges it as PEFT does, bf16 into the master."""
    tokenizer = char_tokenizer()
    model = tiny_llama(TINY, vocab_size=len(tokenizer), seed=0).to(dtype)
    base = copy.deepcopy(model)
    rows = [{"prompt": f"{a}+{b}=", "completion": str(a + b)} for a in range(4) for b in range(2)]
    cfg = default("trainer", lr=1e-3, max_steps=2, batch_size=4, logging_steps=1)
    merged, stats = training.sft(model, tokenizer, rows, cfg, seed=0, lora=LORA, progress=False,
                                 adapter_dir=tmp_path / "adapter")
    assert stats["train_steps"] == 2
    assert (tmp_path / "adapter" / "adapter_config.json").exists()
    W0 = trained(base)
    adapter = PeftModel.from_pretrained(base, tmp_path / "adapter")
    delta = {weight_name(n): training.lora_delta(m, "default") for n, m in training.lora_layers(adapter).items()}
    assert min(float(d.abs().max()) for d in delta.values()) > 0  # the round trained every adapter
    if dtype == torch.float32:  # exactly PEFT's merge, as before
        assert not hasattr(merged, training.MASTER)
        reference = trained(adapter.merge_and_unload())
        assert all(torch.equal(w, reference[n]) for n, w in trained(merged).items())
    else:
        master, W = masters(merged), trained(merged)
        assert all(torch.allclose(master[n], W0[n] + delta[n], rtol=0, atol=1e-8) for n in delta)
        assert all(torch.equal(W[n], master[n].to(torch.bfloat16).float()) for n in delta)


@pytest.mark.parametrize("device", ["auto", "cpu", "same"])
def test_every_master_device_gives_the_same_merge(device):
    """trainer.master_device: where the fp32 copies live does not change what the merge computes (on a GPU,
    auto and cpu keep them in pinned host memory; here every choice is the CPU)."""
    base = bf16_llama()
    peft_model, _ = with_update(copy.deepcopy(base), seed=3)
    reference = training.merge_lora(copy.deepcopy(peft_model), "same")
    merged = training.merge_lora(peft_model, device)
    assert getattr(merged, training.MASTER).device == device
    for (name, w), (_, w_ref) in zip(merged.named_parameters(), reference.named_parameters()):
        assert torch.equal(w, w_ref), name
    for w in getattr(merged, training.MASTER).weights.values():
        assert w.device.type == "cpu" and w.dtype == torch.float32


@pytest.mark.parametrize("setting, on_gpu, home", [("auto", True, "cpu"), ("auto", False, "same"),
                                                   ("cpu", True, "cpu"), ("same", True, "same")])
def test_master_weights_live_on_the_host_for_a_gpu_model_unless_told(setting, on_gpu, home):
    weight = torch.zeros(2, device="meta") if on_gpu else torch.zeros(2)  # meta: a device that is not the CPU
    where = training.MasterWeights(setting).home(weight)
    assert where == (torch.device("cpu") if home == "cpu" else weight.device)
