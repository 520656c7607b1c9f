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

from sirt.config.defaults import default
from sirt.config.errors import InputError
from sirt.models.load import char_tokenizer, tiny_llama
from sirt.stages import generation_vllm
from sirt.stages.generation import sampler
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


def test_weights_version_changes_with_an_in_place_update():
    model, _ = tiny()
    before = generation_vllm.weights_version(model)
    assert generation_vllm.weights_version(model) == before  # nothing changed: no second push in a round
    with torch.no_grad():
        next(model.parameters()).add_(1e-3)
    assert generation_vllm.weights_version(model) != before


def test_vllm_is_imported_only_inside_functions():
    """A CPU machine imports the module (and the loop) without vllm: no import of it at module level."""
    tree = ast.parse((ROOT / "sirt" / "stages" / "generation_vllm.py").read_text())
    top = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
    names = [a.name for n in top if isinstance(n, ast.Import) for a in n.names]
    names += [n.module for n in top if isinstance(n, ast.ImportFrom)]
    assert not [m for m in names if m and m.split(".")[0] == "vllm"]
    code = "import sys, sirt.stages.generation_vllm, sirt.loop.run; print('vllm' in sys.modules)"
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
