"""A CPU stand-in for the part of vLLM's offline API that sirt's vLLM backend calls (vLLM needs CUDA).

It behaves as vLLM does where sirt depends on it: ``LLM(load_format="dummy")`` builds the architecture
from the config in ``model`` with random weights and refuses a ``max_model_len`` above the model's
positions; the weights change only through ``load_weights`` (the colocate push); ``sleep``/``wake_up``
track what is mapped, and an engine freed while asleep is recorded in :data:`FREED_ASLEEP` (vLLM's
driver error); ``generate`` samples each request with its own seed from raw logits (temperature, top-k,
top-p applied after the log-probs are taken, as ``logprobs_mode="raw_logprobs"``), stopping at
``stop_token_ids`` or a ``stop`` string (with ``include_stop_str_in_output`` the text keeps it).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

FREED_ASLEEP: list[str] = []  # engines deleted while asleep
BUILT: list[dict] = []  # the keyword arguments of every LLM built


def TokensPrompt(prompt_token_ids: list[int]) -> dict:
    return {"prompt_token_ids": list(prompt_token_ids)}


@dataclass
class SamplingParams:
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    max_tokens: int = 16
    logprobs: int | None = None
    stop_token_ids: list[int] = field(default_factory=list)
    stop: list[str] | None = None
    include_stop_str_in_output: bool = False
    seed: int | None = None


@dataclass
class Logprob:
    logprob: float


@dataclass
class CompletionOutput:
    text: str
    token_ids: list[int]
    logprobs: list[dict[int, Logprob]]


@dataclass
class RequestOutput:
    outputs: list[CompletionOutput]


class _Runner:
    def __init__(self, model):
        self.model = model


class _Worker:
    def __init__(self, model):
        self.model_runner = _Runner(model)


class _Executor:
    def __init__(self, model):
        self.driver_worker = _Worker(model)


class _Engine:
    def __init__(self, model):
        self.model_executor = _Executor(model)


class _Model(torch.nn.Module):
    """What vLLM's runner holds: the weights, with ``load_weights`` copying named tensors in."""

    def __init__(self, hf):
        super().__init__()
        self.hf = hf

    @torch.no_grad()
    def load_weights(self, weights) -> None:
        own = self.hf.state_dict()
        for name, tensor in weights:
            own[name].copy_(tensor)


class LLM:
    def __init__(self, model: str, max_model_len: int, dtype: str = "float32", seed: int = 0, **kwargs):
        BUILT.append({"model": model, "max_model_len": max_model_len, "dtype": dtype, "seed": seed, **kwargs})
        config = AutoConfig.from_pretrained(model)
        if max_model_len > config.max_position_embeddings:
            raise ValueError(f"User-specified max_model_len ({max_model_len}) is greater than the derived "
                             f"max_model_len (max_position_embeddings={config.max_position_embeddings})")
        torch.manual_seed(seed)
        hf = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype)).eval()  # "dummy" weights
        self.tokenizer = AutoTokenizer.from_pretrained(model)
        self.llm_engine = _Engine(_Model(hf))
        self.asleep = False
        self.events: list[str] = []

    @property
    def _hf(self):
        return self.llm_engine.model_executor.driver_worker.model_runner.model.hf

    def reset_prefix_cache(self) -> None:
        self.events.append("reset_prefix_cache")

    def sleep(self, level: int = 1) -> None:
        self.events.append(f"sleep{level}")
        self.asleep = True

    def wake_up(self, tags: list[str] | None = None) -> None:
        self.events.append("wake_up" + (f":{','.join(tags)}" if tags else ""))
        if tags is None or "kv_cache" in tags:
            self.asleep = False

    def __del__(self):
        if getattr(self, "asleep", False):
            FREED_ASLEEP.append("freed while asleep")

    @torch.no_grad()
    def _one(self, prompt_ids: list[int], p: SamplingParams) -> CompletionOutput:
        gen = torch.Generator().manual_seed(p.seed if p.seed is not None else 0)
        ids, logprobs = list(prompt_ids), []
        for _ in range(p.max_tokens):
            logits = self._hf(torch.tensor([ids])).logits[0, -1].float()
            raw = torch.log_softmax(logits, dim=-1)
            if p.temperature == 0:
                token = int(raw.argmax())
            else:
                probs = torch.softmax(logits / p.temperature, dim=-1)
                if p.top_k > 0:
                    probs[probs < probs.topk(p.top_k).values[-1]] = 0
                if p.top_p < 1:
                    ordered, index = probs.sort(descending=True)
                    drop = ordered.cumsum(0) - ordered > p.top_p * ordered.sum()
                    probs[index[drop]] = 0
                token = int(torch.multinomial(probs / probs.sum(), 1, generator=gen))
            ids.append(token)
            logprobs.append({token: Logprob(float(raw[token]))})
            new = ids[len(prompt_ids):]
            text = self.tokenizer.decode(new, skip_special_tokens=True)
            if token in p.stop_token_ids or (p.stop and any(s in text for s in p.stop)):
                break
        new = ids[len(prompt_ids):]
        return CompletionOutput(self.tokenizer.decode(new, skip_special_tokens=True), new, logprobs)

    def generate(self, prompts: list[dict], params: list[SamplingParams], use_tqdm: bool = True) -> list:
        if self.asleep:
            raise RuntimeError("generate on a sleeping engine")
        self.events.append("generate")
        return [RequestOutput([self._one(pr["prompt_token_ids"], p) for _ in range(p.n)])
                for pr, p in zip(prompts, params)]
