"""Tokens: one tokenization of a prompt and its response, shared by sampling, verification and training.

Prompt texts carry their special tokens as text (see :mod:`sirt.models.prompts`: the chat template
renders BOS where the model wants it, ``bos_text`` adds it to plain prompts), so every stage tokenizes
them without adding any. Prompt and response are tokenized apart, as generation sees them: the
prompt's ids, then the response's. Training targets end with the tokenizer's EOS, which is the chat
template's end of turn for a chat model (:func:`sirt.models.load.end_at_turn_end`).

TRL would tokenize text rows itself, with special tokens (a second BOS for Llama-3.x) and across the
prompt/completion boundary, so SFT is handed these ids instead (:func:`training_row`).
:mod:`sirt.stages.identity` reads back what each stage really feeds the model and says whether they agree.
"""

from __future__ import annotations

import string

import torch
from transformers import PreTrainedTokenizerBase

from sirt.config.errors import ConfigError

IGNORE = -100  # the label of a token the loss skips (the prompt's)


def encode(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    """The ids of ``text`` with no special tokens added: the text holds the ones it needs."""
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def encode_all(tokenizer: PreTrainedTokenizerBase, texts: list[str]) -> list[list[int]]:
    """:func:`encode` of many texts in one tokenizer call."""
    return tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []


def left_padded(ids: list[list[int]], pad_id: int, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """``input_ids`` and ``attention_mask`` of a batch padded on the left, so every row's next token
    comes at the same last position (batched generation and verdicts)."""
    width = max((len(row) for row in ids), default=0)
    input_ids = [[pad_id] * (width - len(row)) + row for row in ids]
    mask = [[0] * (width - len(row)) + [1] * len(row) for row in ids]
    return {"input_ids": torch.tensor(input_ids, dtype=torch.long, device=device),
            "attention_mask": torch.tensor(mask, dtype=torch.long, device=device)}


def target_ids(tokenizer: PreTrainedTokenizerBase, completion: str) -> list[int]:
    """A training target: the completion's ids closed by EOS, so the model learns to stop there."""
    ids = encode(tokenizer, completion)
    return ids if ids[-1:] == [tokenizer.eos_token_id] else [*ids, tokenizer.eos_token_id]


def training_row(tokenizer: PreTrainedTokenizerBase, prompt: str, completion: str) -> dict[str, list[int]]:
    """A pre-tokenized SFT row: TRL uses ``input_ids`` and ``labels`` as they are (the prompt's labels
    are IGNORE, so the loss is -log pi(completion | prompt)) and adds no BOS or EOS of its own."""
    prompt_ids, target = encode(tokenizer, prompt), target_ids(tokenizer, completion)
    return {"input_ids": prompt_ids + target, "labels": [IGNORE] * len(prompt_ids) + target}


def template_pieces(template: str, values: dict[str, str]) -> list[str]:
    """The texts a ``str.format`` template is made of, in order: its literal parts and its fields' values.

    Tokenized one by one, the prompt and the response keep the ids they have in the other stages
    (no token merges across their boundaries).
    """
    formatter, pieces = string.Formatter(), []
    for literal, field, spec, conversion in formatter.parse(template):
        if literal:
            pieces.append(literal)
        if field is not None:
            if field not in values:
                raise ConfigError(f"verifier.template: unknown field {{{field}}}; use {{prompt}} and {{response}}")
            pieces.append(formatter.format_field(formatter.convert_field(values[field], conversion), spec or ""))
    return pieces


def verification_ids(tokenizer: PreTrainedTokenizerBase, template: str, prompt: str, response: str) -> list[int]:
    """The ids the verifier reads for (prompt, response): ``template`` filled in, piece by piece."""
    pieces = template_pieces(template, {"prompt": prompt, "response": response})
    return [i for ids in encode_all(tokenizer, pieces) for i in ids]
