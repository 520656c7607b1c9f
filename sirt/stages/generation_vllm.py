"""Generation with vLLM (``generation.backend=vllm``): the solver's samples, fast, on a GPU.

Same interface and return type as :func:`sirt.stages.generation.sample`. The engine is built once per
process with dummy weights from the current model's config and tokenizer, and before every call
it receives the current weights in place (the merged model of the round, whatever its source:
hub, GGUF or checkpoint), the way TRL's colocated vLLM does. Log-probs are vLLM's
``raw_logprobs`` of the sampled tokens: computed before temperature, top-k and top-p, i.e.
under the plain model, which is what U needs. Prompts are passed as the token ids of
:mod:`sirt.models.tokens`, exactly as the transformers backend encodes them.

vLLM is optional (``pip install -e '.[vllm]'`` on a CUDA machine) and imported only here.
"""

from __future__ import annotations

import os
import tempfile

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from sirt.config.errors import InputError
from sirt.config.schema import GenerationSchema
from sirt.models.tokens import encode_all
from sirt.stages.samples import Sample

_engines: dict[str, object] = {}  # one engine per model architecture, kept across rounds


def import_vllm():
    """The vllm module, or one clear error saying how to get it."""
    try:
        import vllm
    except ImportError:
        raise InputError("generation.backend=vllm: vllm is not installed; pip install -e '.[vllm]' on a CUDA "
                         "machine, or use generation.backend=transformers") from None
    return vllm


def engine(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, cfg: GenerationSchema):
    """The process's vLLM engine for this model's architecture, built with dummy weights once."""
    key = model.config.to_json_string()
    if key not in _engines:
        vllm = import_vllm()
        for name, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1"), ("MASTER_ADDR", "localhost"),
                            ("MASTER_PORT", "29531")):
            os.environ.setdefault(name, value)  # the in-process executor TRL uses needs a one-rank world
        spec = tempfile.mkdtemp(prefix="sirt-vllm-")
        model.config.save_pretrained(spec)
        tokenizer.save_pretrained(spec)
        _engines[key] = vllm.LLM(
            model=spec,
            load_format="dummy",  # the real weights arrive from the model before every call
            dtype=str(model.dtype).removeprefix("torch."),
            gpu_memory_utilization=cfg.vllm.gpu_memory_utilization,
            max_model_len=cfg.vllm.max_model_len,
            distributed_executor_backend="external_launcher",
            logprobs_mode="raw_logprobs",
            seed=0,
        )
    return _engines[key]


@torch.no_grad()
def push_weights(llm, model: PreTrainedModel) -> None:
    """Copy the current weights into the engine (TRL's colocate path) and drop its prefix cache."""
    runner_model = llm.llm_engine.model_executor.driver_worker.model_runner.model
    runner_model.load_weights(model.state_dict().items())
    llm.reset_prefix_cache()


def to_sample(output) -> Sample:
    """One vLLM completion as a Sample: the sampled tokens' raw log-probs, EOS included."""
    logprob = sum(step[token].logprob for token, step in zip(output.token_ids, output.logprobs))
    return Sample(output.text, len(output.token_ids), float(logprob))


def sample(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    cfg: GenerationSchema,
    n: int | None = None,
    greedy: bool = False,
    desc: str = "generate",
) -> list[list[Sample]]:
    """``n`` (default N) responses per prompt with their plain-model log-probs, like the transformers backend.

    ``desc`` is accepted for the common interface; vLLM schedules all prompts at once and shows no bar.
    """
    vllm = import_vllm()
    n = cfg.n_samples if n is None else n
    llm = engine(model, tokenizer, cfg)
    push_weights(llm, model)
    base_seed = torch.initial_seed() % 2**31  # seeded per round by the loop, so a resumed round repeats
    params = [vllm.SamplingParams(
        n=n,
        temperature=0.0 if greedy else cfg.temperature,
        top_p=1.0 if greedy else cfg.top_p,
        top_k=0 if greedy else cfg.top_k,  # 0 = no top-k filter
        max_tokens=cfg.max_new_tokens,
        logprobs=0,  # the sampled token's log-prob only
        stop_token_ids=[tokenizer.eos_token_id],
        seed=(base_seed + i) % 2**31,
    ) for i in range(len(prompts))]
    encoded = [vllm.TokensPrompt(prompt_token_ids=ids) for ids in encode_all(tokenizer, prompts)]
    outputs = llm.generate(encoded, params, use_tqdm=False)
    return [[to_sample(o) for o in out.outputs] for out in outputs]
