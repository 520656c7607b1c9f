"""Verifier methods by ``verifier.method`` name: how a method asks for a verdict and how it is read.

A method is its answer texts (TF: the true and false words; QE: the ratings, lowest first), the verdict a
right and a wrong answer deserve (judged few-shot examples, the organism's teaching), the question a chat
model is asked, and the score it reads from the next-token distribution over the first tokens of its
answers. Adding a method is one :class:`Method` here and one ``conf/verifier/<name>.yaml``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

from sirt.config.errors import ConfigError
from sirt.config.schema import ChatSchema, VerifierSchema


def first_token_ids(tokenizer: PreTrainedTokenizerBase, word: str) -> list[int]:
    """Distinct first tokens of the spellings of ``word`` a tokenizer may produce after a prompt."""
    spellings = {word, " " + word, word.capitalize(), " " + word.capitalize(), word.lower(), " " + word.lower()}
    ids = set()
    for spelling in spellings:
        tokens = tokenizer.encode(spelling, add_special_tokens=False)
        if tokens and tokenizer.decode(tokens[:1]).strip():  # skip a lone-space first token
            ids.add(tokens[0])
    if not ids:
        raise ConfigError(f"verifier.words: word {word!r} has no usable first token in this tokenizer")
    return sorted(ids)


def tf_scores(logits: torch.Tensor, true_ids: list[int], false_ids: list[int]) -> torch.Tensor:
    """P(true)/(P(true)+P(false)) from next-token logits (batch, vocab)."""
    if set(true_ids) & set(false_ids):
        raise ConfigError("verifier.words: the true and false words share a first token; choose distinguishable words")
    probs = torch.softmax(logits.float(), dim=-1)
    p_true = probs[:, true_ids].sum(dim=-1)
    p_false = probs[:, false_ids].sum(dim=-1)
    return p_true / (p_true + p_false).clamp_min(1e-30)


def qe_scores(logits: torch.Tensor, rating_ids: list[int]) -> torch.Tensor:
    """Expected rating in [0, 1] from next-token logits over ``rating_ids`` (lowest rating first)."""
    if len(set(rating_ids)) != len(rating_ids):
        raise ConfigError("verifier.ratings: rating tokens are not distinct in this tokenizer")
    probs = torch.softmax(logits.float()[:, rating_ids], dim=-1)
    values = torch.linspace(0.0, 1.0, len(rating_ids), device=logits.device)
    return probs @ values


@dataclass(frozen=True)
class Method:
    """One verifier method; every function takes the run's VerifierSchema."""

    field: str  # the config field that lists the answers (named in messages)

    def answers(self, cfg: VerifierSchema) -> list[str]:
        raise NotImplementedError

    def extremes(self, cfg: VerifierSchema) -> tuple[str, str]:
        """(the verdict of a right answer, of a wrong one)."""
        raise NotImplementedError

    def question(self, chat: ChatSchema, cfg: VerifierSchema) -> str:
        """The user turn that asks a chat model for a verdict."""
        raise NotImplementedError

    def token_groups(self, tokenizer: PreTrainedTokenizerBase, cfg: VerifierSchema) -> list[list[int]]:
        """The first tokens each answer may start with, in the order of :meth:`answers`."""
        raise NotImplementedError

    def scores(self, logits: torch.Tensor, groups: Sequence[Sequence[int]]) -> torch.Tensor:
        raise NotImplementedError

    def parse(self, text: str, cfg: VerifierSchema) -> float | None:
        """The score a free-text verdict states (the naive path), None when it states none."""
        raise NotImplementedError


class TrueFalse(Method):
    """TF: ``s = P(true) / (P(true) + P(false))``; every spelling's first token counts."""

    def answers(self, cfg):
        return list(cfg.words)

    def extremes(self, cfg):
        return cfg.words[0], cfg.words[1]

    def question(self, chat, cfg):
        return chat.verify_tf.format(true=cfg.words[0], false=cfg.words[1])

    def token_groups(self, tokenizer, cfg):
        return [first_token_ids(tokenizer, w) for w in cfg.words]

    def scores(self, logits, groups):
        return tf_scores(logits, list(groups[0]), list(groups[1]))

    def parse(self, text, cfg):
        head = text.strip().lower()
        true_word, false_word = (w.lower() for w in cfg.words)
        return 1.0 if head.startswith(true_word) else 0.0 if head.startswith(false_word) else None


class Rating(Method):
    """QE: the expected rating under the next-token distribution over the ratings, scaled to [0, 1]."""

    def answers(self, cfg):
        return list(cfg.ratings)

    def extremes(self, cfg):
        return cfg.ratings[-1], cfg.ratings[0]

    def question(self, chat, cfg):
        return chat.verify_qe.format(low=cfg.ratings[0], high=cfg.ratings[-1])

    def token_groups(self, tokenizer, cfg):
        return [first_token_ids(tokenizer, r)[:1] for r in cfg.ratings]

    def scores(self, logits, groups):
        return qe_scores(logits, [g[0] for g in groups])

    def parse(self, text, cfg):
        head = text.strip().lower()
        ratings = [(r, i) for i, r in enumerate(cfg.ratings) if head.startswith(r.lower())]
        if not ratings:
            return None
        _, index = max(ratings, key=lambda ri: len(ri[0]))  # "10" before "1"
        return index / (len(cfg.ratings) - 1)


METHODS: dict[str, Method] = {"tf": TrueFalse("verifier.words"), "qe": Rating("verifier.ratings")}
"""The verifier methods, keyed by the option names of ``conf/verifier/``."""


def method(cfg: VerifierSchema) -> Method:
    return METHODS[cfg.method]
