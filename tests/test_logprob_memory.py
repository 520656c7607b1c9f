"""Logits memory: sampling's log-probs and verification's scores never hold batch x steps x vocab.

A 128k vocabulary (Llama 3's) on a model with a hidden size of 16 makes the logits the only large
tensors, so the allocator's peak shows them: above the logit budget it must not grow with the number
of new tokens, nor with the length of the verified texts. Below the budget the log-probs come from
``generate``'s own logits; both ways they are those of the raw logits ``generate`` sees.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator

import pytest
import torch
from torch._C._profiler import _EventType
from torch.profiler import ProfilerActivity, profile
from transformers import LlamaConfig, LlamaForCausalLM

from sirt.config.compose import compose
from sirt.config.schema import Config
from sirt.config.validate import validate
from sirt.models.load import char_tokenizer, tiny_llama
from sirt.stages.generation import LOGIT_BUDGET, encode_prompts, logit_bytes, sample
from sirt.stages.samples import Sample
from sirt.stages.verification import Verifier

VOCAB = 128256
PROMPTS = ["Q: 7\nA: ", "Q: 1+2\nA: ", "Q: 12+3-4\nA: ", "Q: 5-1+9-3\nA: "]  # shortest first, as sample() runs them


@pytest.fixture(scope="module")
def config() -> Config:
    return validate(compose())


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """Two threads on a shared 2-core machine spin against each other: one is several times faster."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def wide_model(one_thread) -> LlamaForCausalLM:
    """Llama 3's vocabulary on a model too small to matter: 2M parameters, nearly all the embedding."""
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         num_key_value_heads=2, intermediate_size=32, max_position_embeddings=1024, pad_token_id=0,
                         eos_token_id=1, bos_token_id=None, tie_word_embeddings=True)
    return LlamaForCausalLM(config).eval()


def _events(nodes: list) -> Iterator:
    for node in nodes:
        yield node
        yield from _events(node.children)


def peak_bytes(fn: Callable[[], object]) -> tuple[object, int]:
    """``fn()`` and the most CPU memory its tensors held at once, from the profiler's allocation events."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        result = fn()
    totals = [e.extra_fields.total_allocated for e in _events(prof.profiler.kineto_results.experimental_event_tree())
              if e.tag == _EventType.Allocation]
    return result, max(totals, default=0)


def test_sampling_peak_memory_does_not_grow_with_steps_times_vocab(wide_model, config):
    """Above the budget the pass holds one chunk of logits whatever the length: a budget of 16 positions of one
    row (8 MiB) here, so that both lengths are many times over it, as 512 tokens of 1,024 rows are at 256 MiB."""
    tokenizer, peaks = char_tokenizer(), {}
    budget = logit_bytes(wide_model, 1, 16)
    for steps in (256, 512):
        assert logit_bytes(wide_model, len(PROMPTS), steps) > LOGIT_BUDGET  # generate's logits would pass it
        gen = dataclasses.replace(config.generation, max_new_tokens=steps)  # greedy: CPU multinomial over 128k
        samples, peaks[steps] = peak_bytes(lambda gen=gen: sample(wide_model, tokenizer, PROMPTS, gen, n=1,
                                                                  greedy=True, logit_budget=budget))
        assert [s.n_tokens for [s] in samples] == [steps] * len(PROMPTS)  # no early EOS: every step was taken
    held_by_logits = logit_bytes(wide_model, len(PROMPTS), 512)  # 1 GB
    assert peaks[512] < 1.2 * peaks[256], peaks
    assert peaks[512] < held_by_logits / 8, peaks


def test_verification_peak_memory_does_not_grow_with_length_times_vocab(wide_model, config):
    verifier = Verifier(char_tokenizer(), dataclasses.replace(config.verifier, method="tf", words=["y", "n"]))
    peaks = {}
    for length in (16, 256):
        pairs = [(p, "1" * length) for p in PROMPTS[:2]]
        scores, peaks[length] = peak_bytes(lambda pairs=pairs: verifier.score(wide_model, pairs))
        assert all(0.0 < s < 1.0 for s in scores)
    held_by_logits = 2 * 256 * VOCAB * 4
    assert peaks[256] < 1.2 * peaks[16], peaks
    assert peaks[256] < held_by_logits / 4, peaks


SETTINGS = [{"temperature": 0.7, "top_k": 20}, {"temperature": 1.3, "top_p": 0.9}]
N, STEPS = 3, 40


def tiny(config: Config, settings: dict):
    """The organism's shape, small, with sampling ``settings``: all 4 x N samples in one generate call."""
    tokenizer = char_tokenizer()
    shape = dataclasses.replace(config.model.tiny, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64)
    gen = dataclasses.replace(config.generation, n_samples=N, max_new_tokens=STEPS, batch_size=len(PROMPTS) * N,
                              **settings)
    return tokenizer, tiny_llama(shape, len(tokenizer), seed=0).eval(), gen


def drawn(model, tokenizer, gen, logit_budget: int) -> list[Sample]:
    torch.manual_seed(0)
    return [s for row in sample(model, tokenizer, PROMPTS, gen, logit_budget=logit_budget) for s in row]


@pytest.mark.parametrize("settings", SETTINGS)
def test_both_paths_give_the_same_logprobs(one_thread, config, settings):
    """Under the budget ``generate``'s logits are gathered, over it the teacher-forced pass scores the
    same draws: a budget of 0 takes one position at a time, one of 7 positions leaves a short last chunk."""
    tokenizer, model, gen = tiny(config, settings)
    rows = len(PROMPTS) * N
    assert logit_bytes(model, rows, STEPS) <= LOGIT_BUDGET  # by default: generate's own logits
    kept = drawn(model, tokenizer, gen, LOGIT_BUDGET)
    assert min(s.n_tokens for s in kept) < STEPS  # some samples stop at EOS
    for budget in (0, logit_bytes(model, rows, 7)):
        passed = drawn(model, tokenizer, gen, budget)
        assert [(s.text, s.n_tokens) for s in passed] == [(s.text, s.n_tokens) for s in kept]
        assert [s.logprob for s in passed] == pytest.approx([s.logprob for s in kept], rel=1e-5, abs=1e-5)


@pytest.mark.parametrize("settings", SETTINGS)
@pytest.mark.parametrize("logit_budget", [LOGIT_BUDGET, 0])
def test_logprobs_are_those_of_the_raw_logits_generate_sees(one_thread, config, settings, logit_budget):
    """The reference: ``generate``'s own raw logits (``output_logits``) for the same draws, with EOS
    counted and what follows it ignored; sampling settings never change log pi(y|x), nor does the path."""
    tokenizer, model, gen = tiny(config, settings)
    samples = drawn(model, tokenizer, gen, logit_budget)
    torch.manual_seed(0)
    enc = encode_prompts(tokenizer, PROMPTS)
    with torch.inference_mode():
        out = model.generate(**enc, do_sample=True, temperature=gen.temperature, top_p=gen.top_p, top_k=gen.top_k,
                             num_return_sequences=N, max_new_tokens=STEPS, output_logits=True,
                             return_dict_in_generate=True, pad_token_id=tokenizer.pad_token_id,
                             eos_token_id=tokenizer.eos_token_id)
    new = out.sequences[:, enc["input_ids"].shape[1] :]
    raw = torch.log_softmax(torch.stack(out.logits, dim=1).float(), dim=-1).gather(-1, new.unsqueeze(-1)).squeeze(-1)
    ends = [int((row == tokenizer.eos_token_id).nonzero()[0]) + 1 if (row == tokenizer.eos_token_id).any()
            else len(row) for row in new]
    assert [s.n_tokens for s in samples] == ends
    assert min(ends) < STEPS  # some samples stop at EOS
    expected = [float(row[:end].sum()) for row, end in zip(raw, ends)]
    assert [s.logprob for s in samples] == pytest.approx(expected, rel=1e-5)


def test_the_pass_keeps_every_call_within_the_budget_and_takes_whole_responses(one_thread):
    """At the paper's scale one position of all rows is over the budget (1,024 rows x 128k x 4 B = 501 MiB):
    the positions-only pass then went one position per call, each over the budget. Row chunks keep every call
    within it and score a row's whole response in one call; both give the same log-probs."""
    from sirt.perf.logprob_pass import compare

    point = compare(rows=32, steps=8)
    assert point["positions_only"]["largest_call_logits_mib"] == pytest.approx(2 * point["logit_budget_mib"])
    assert point["positions_only"]["forward_calls"] == 8 + 1  # a prefill and one call per response token
    assert point["row_chunks"]["largest_call_logits_mib"] <= point["logit_budget_mib"]
    rows_per_call = int(point["logit_budget_mib"] * 2**20 // (8 * VOCAB * 4))
    assert point["row_chunks"]["forward_calls"] == -(-32 // rows_per_call)  # one forward per chunk of rows
    assert point["max_abs_diff"] < 1e-5
