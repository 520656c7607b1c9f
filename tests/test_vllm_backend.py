"""The vLLM backend's parts that need no vLLM and no GPU: ports, temp dirs, lazy imports, the missing-package
error; and ``python -m sirt.gpu_check`` refusing a machine without CUDA."""

from __future__ import annotations

import ast
import importlib.util
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from peft import get_peft_model

from sirt.config.defaults import default
from sirt.config.errors import InputError
from sirt.models.load import char_tokenizer, tiny_llama
from sirt.models.version import bump, weights_version
from sirt.plan.seeds import request_seed
from sirt.stages import agreement, generation_vllm, training
from sirt.stages.backends import sampler
from tests.conftest import ROOT, sirt_command

HAS_VLLM = importlib.util.find_spec("vllm") is not None


def tiny(hidden_size: int = 32):
    """A tiny Llama and the organism's tokenizer (an engine is keyed by the model's config)."""
    tokenizer = char_tokenizer()
    cfg = default("model.tiny", hidden_size=hidden_size, num_layers=1, num_heads=2, intermediate_size=64)
    return tiny_llama(cfg, vocab_size=len(tokenizer), seed=0), tokenizer


def vllm_generation():
    return default("generation", backend="vllm")


def test_free_port_is_bindable_and_never_repeats():
    ports = [generation_vllm.free_port() for _ in range(5)]
    assert len(set(ports)) == 5
    for port in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", port))  # raises if the port were taken


def test_two_engines_get_their_own_port_and_dir():
    (model_a, tok), (model_b, _) = tiny(32), tiny(48)
    a = generation_vllm.Engine(model_a, tok, vllm_generation())
    b = generation_vllm.Engine(model_b, tok, vllm_generation())
    try:
        assert a.port != b.port
        assert a.path != b.path
        assert a.key != b.key
        for e in (a, b):  # what vLLM reads when it starts: the model's config and tokenizer
            assert (Path(e.path) / "config.json").exists()
            assert (Path(e.path) / "tokenizer.json").exists()
    finally:
        a.close()
        b.close()


def test_teardown_removes_the_temp_dir_and_forgets_the_engine():
    model, tok = tiny()
    built = generation_vllm.Engine(model, tok, vllm_generation())
    path = Path(built.path)
    generation_vllm._current = built  # the engine the process holds (as engine() leaves it)
    assert path.is_dir()
    generation_vllm.teardown()
    assert not path.exists()
    assert generation_vllm._current is None
    generation_vllm.teardown()  # a second call, with no engine, does nothing


def test_close_puts_the_environment_back():
    model, tok = tiny()
    engine = generation_vllm.Engine(model, tok, vllm_generation())
    before = os.environ.get("MASTER_PORT")
    engine._setenv("MASTER_PORT", str(engine.port), force=True)
    assert os.environ["MASTER_PORT"] == str(engine.port)
    engine.close()
    assert os.environ.get("MASTER_PORT") == before


def test_a_model_keeps_its_version_until_the_loop_trains_it():
    model, _ = tiny()
    before = weights_version(model)
    assert weights_version(model) == before  # nothing changed: no second push in a round
    assert weights_version(tiny()[0]) != before  # another model object: another number
    bump(model)
    assert weights_version(model) != before


def sft_round(model, tokenizer, dtype: str = "float32"):
    """One real LoRA round (TRL SFTTrainer, PEFT merge) on two rows: the merge writes through ``.data``."""
    rows = [{"prompt": "1+1=", "completion": "2 #### 2"}, {"prompt": "2+2=", "completion": "4 #### 4"}]
    cfg = default("trainer", max_steps=2, batch_size=2, lr=1e-2)
    lora = default("model.lora", r=4, alpha=8, dropout=0.0, target_modules=["q_proj", "v_proj"])
    trained, _ = training.sft(model, tokenizer, rows, cfg, seed=0, lora=lora, dtype=dtype, progress=False)
    return trained


def test_a_merge_through_data_is_invisible_to_tensor_metadata_but_bumps_the_version():
    """Why the push follows the loop: PEFT's merge (``weight.data += delta``) and the bf16 master copy
    (``weight.data.copy_``) leave data_ptr and _version as they were."""
    model, tok = tiny()
    metadata = {n: (t.data_ptr(), t._version) for n, t in model.state_dict().items()}
    weights = {n: t.clone() for n, t in model.state_dict().items()}
    before = weights_version(model)
    trained = sft_round(model, tok)
    changed = [n for n, t in trained.state_dict().items() if not torch.equal(t, weights[n])]
    assert changed  # the round did change weights ...
    assert all((trained.state_dict()[n].data_ptr(), trained.state_dict()[n]._version) == metadata[n] for n in changed)
    assert weights_version(trained) != before  # ... and the loop's number says so


def test_vllm_is_imported_only_inside_functions():
    """A CPU machine imports the module (and the loop) without vllm: no import of it at module level."""
    tree = ast.parse((ROOT / "sirt" / "stages" / "generation_vllm.py").read_text())
    top = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
    names = [a.name for n in top if isinstance(n, ast.Import) for a in n.names]
    names += [n.module for n in top if isinstance(n, ast.ImportFrom)]
    assert not [m for m in names if m and m.split(".")[0] == "vllm"]
    code = "import sys, sirt.stages.generation_vllm, sirt.loop.trainer; print('vllm' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "False"


@pytest.mark.skipif(HAS_VLLM, reason="vllm is installed here")
def test_choosing_vllm_without_it_is_one_clear_error():
    model, tok = tiny()
    cfg = vllm_generation()
    with pytest.raises(InputError) as err:
        sampler(cfg)(model, tok, ["1+1="], cfg)
    message = str(err.value)
    assert "\n" not in message
    assert "'vllm' is not installed" in message
    assert "pip install -e '.[vllm]'" in message
    assert generation_vllm._current is None  # nothing was built, nothing left to tear down


@pytest.mark.skipif(HAS_VLLM, reason="vllm is installed here")
def test_a_failed_start_leaves_no_temp_dir_or_environment():
    model, tok = tiny()
    env = dict(os.environ)
    engine = generation_vllm.Engine(model, tok, vllm_generation())
    with pytest.raises(InputError):
        engine.start()
    engine.close()
    assert not Path(engine.path).exists()
    assert dict(os.environ) == env


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is here")
def test_gpu_check_without_cuda_exits_2_in_one_line(tmp_path):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([*sirt_command("gpu_check"), "--out", str(tmp_path)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "no CUDA device" in lines[0]
    assert not (tmp_path / "gpu_check.json").exists()


# --- the backend end to end on a CPU stand-in for vLLM (tests/standins/vllm: vLLM itself needs CUDA) ---

STANDINS = ROOT / "tests" / "standins"


@pytest.fixture
def standin(monkeypatch):
    """``import vllm`` finds the CPU stand-in while a test runs; afterwards the engine is torn down and the
    stand-in forgotten, so the other tests see a machine without vllm."""
    if HAS_VLLM:
        pytest.skip("the real vllm is installed here")
    monkeypatch.syspath_prepend(str(STANDINS))
    import vllm

    vllm.BUILT.clear()
    vllm.FREED_ASLEEP.clear()
    yield vllm
    generation_vllm.teardown()
    for name in [m for m in sys.modules if m == "vllm" or m.startswith("vllm.")]:
        del sys.modules[name]


def engine_weights() -> dict[str, torch.Tensor]:
    return generation_vllm._current.llm._hf.state_dict()


def draw(model, tok, cfg, prompts=("1+2=", "3+4=")):
    torch.manual_seed(0)
    return sampler(cfg)(model, tok, list(prompts), cfg, n=3)


def lora_update(model, std: float = 1e-2):
    """``model`` with a random LoRA update merged in by :func:`sirt.stages.training.merge_lora`, as a round ends."""
    peft = get_peft_model(model, training.lora_config(default("model.lora", r=4, alpha=8, dropout=0.0,
                                                                target_modules=["q_proj", "v_proj"])))
    gen = torch.Generator().manual_seed(1)
    for layer in training.lora_layers(peft).values():
        layer.lora_B["default"].weight.data = torch.randn(layer.lora_B["default"].weight.shape, generator=gen) * std
    return training.merge_lora(peft)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_merge_through_data_leads_to_a_push(standin, dtype):
    """PEFT's fp32 merge (``weight.data += delta``) and the bf16 master copy (``weight.data.copy_``) leave the
    tensors' data_ptr and _version as they were; the engine must hold the merged weights all the same."""
    model, tok = tiny()
    model = model.to(dtype)
    cfg = default("generation", backend="vllm", max_new_tokens=4)
    draw(model, tok, cfg)
    metadata = {n: (t.data_ptr(), t._version) for n, t in model.state_dict().items()}
    model = lora_update(model)
    assert {n: (t.data_ptr(), t._version) for n, t in model.state_dict().items()} == metadata  # invisible there
    draw(model, tok, cfg)
    held = engine_weights()
    assert all(torch.equal(held[n], t) for n, t in model.state_dict().items())


def test_the_engine_follows_every_training_round(standin):
    """The push is driven by the loop: after a merge through ``.data`` the engine holds the new weights, and it
    is the same engine (its key ignores what training toggles in the config)."""
    model, tok = tiny()
    cfg = default("generation", backend="vllm", max_new_tokens=6)
    draw(model, tok, cfg)
    for _ in range(2):
        model = sft_round(model, tok)
        draw(model, tok, cfg)
        held = engine_weights()
        assert all(torch.equal(held[n], t) for n, t in model.state_dict().items())
    assert len(standin.BUILT) == 1


def test_the_engine_key_ignores_what_training_toggles():
    model, tok = tiny()
    key = generation_vllm.architecture(model)
    trained = sft_round(model, tok)
    assert trained.config.use_cache is not None
    assert generation_vllm.architecture(trained) == key
    assert generation_vllm.architecture(tiny(48)[0]) != key


def test_a_sleeping_engine_is_woken_before_it_is_freed(standin):
    model, tok = tiny()
    draw(model, tok, default("generation", backend="vllm", max_new_tokens=4))
    llm = generation_vllm._current.llm
    assert llm.asleep  # every call ends asleep
    generation_vllm.teardown()
    assert llm.events[-1] == "wake_up"
    del llm
    assert standin.FREED_ASLEEP == []


def test_max_model_len_is_capped_at_the_models_positions(standin):
    model, tok = tiny()  # the organism's 256 positions; generation.vllm.max_model_len is 4096
    draw(model, tok, default("generation", backend="vllm", max_new_tokens=4))
    assert standin.BUILT[-1]["max_model_len"] == model.config.max_position_embeddings


def test_samples_of_a_prompt_do_not_depend_on_the_batch_and_seeds_never_repeat(standin):
    model, tok = tiny()
    cfg = default("generation", backend="vllm", max_new_tokens=8)
    alone = draw(model, tok, cfg, ["3+4="])[0]
    together = draw(model, tok, cfg, ["1+2=", "3+4=", "5+6="])[1]
    assert [s.token_ids for s in alone] == [s.token_ids for s in together]
    seeds = {request_seed(7, p, j) for p in ("1+2=", "3+4=", "5+6=") for j in range(64)}
    assert len(seeds) == 3 * 64  # base + i per prompt and + j per sample would give 64 + 2


def test_vllm_responses_are_cut_at_a_stop_like_the_transformers_backend(standin):
    model, tok = tiny()
    cfg = default("generation", backend="vllm", max_new_tokens=24, temperature=3.0, stop=["1"])
    samples = [s for row in draw(model, tok, cfg) for s in row]
    assert any(s.n_tokens < 24 and tok.eos_token_id not in s.token_ids for s in samples)  # some stopped at "1"
    for s in samples:
        assert "1" not in s.text
        assert s.text == tok.decode(s.token_ids, skip_special_tokens=True)
        assert s.n_tokens == len(s.token_ids) == len(s.token_logprobs)
        assert s.logprob == pytest.approx(sum(s.token_logprobs))


def test_the_probe_passes_an_engine_in_step_and_stops_a_stale_one(standin):
    """backend_logprob_err: the engine's samples re-scored by the model it should hold. After a training round
    that the engine never received, the probe names the round and the figure."""
    model, tok = tiny()
    cfg = default("generation", backend="vllm", max_new_tokens=8)
    prompts = ["1+2=", "3+4="]
    samples = draw(model, tok, cfg, prompts)
    assert agreement.logprob_err(model, tok, prompts, samples, 8) < 1e-5
    trained = sft_round(model, tok)  # what a stale engine would have missed
    err = agreement.logprob_err(trained, tok, prompts, samples, 8)
    assert err > 1e-2
    with pytest.raises(agreement.SamplerMismatch, match=r"^round 2: .* up to [0-9.e-]+ per token"):
        agreement.check(2, err, agreement.tolerance(None, trained.dtype), "vllm")


@pytest.mark.slow
def test_a_micro_run_on_the_vllm_backend_stays_in_step(standin, micro_loop, tmp_path):
    rows = micro_loop(tmp_path / "run", "generation.backend=vllm", "verifier.sigma=0", "logger=none",
                      "fit.enabled=false")
    assert [r["round"] for r in rows] == [0, 1, 2]
    assert all(r["n_train_rows"] > 0 for r in rows[1:])  # rounds trained, so the engine had to follow
    assert all(r["backend_logprob_err"] <= 1e-4 for r in rows), [r["backend_logprob_err"] for r in rows]
    assert len(standin.BUILT) == 1
