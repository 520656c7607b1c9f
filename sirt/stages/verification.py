"""Self-verification: the model scores its own responses, s in [0, 1], from one forward pass.

Only the last position goes through the LM head (``logits_to_keep=1`` where the model takes it), so
a batch's logits are batch x vocab whatever the length of the texts, and no KV cache is built
(``use_cache=False``: one pass has no next step; the cache of 256 texts of an 8B model would be ~28 GiB).

TF: ``s = P(true) / (P(true) + P(false))`` from the next-token distribution over the two answer
words. QE: the expected rating under the next-token distribution over the rating tokens,
scaled to [0, 1]. No free text is generated or parsed. A word may be spelt by the tokenizer
with or without a leading space or capitalised; every spelling's first token counts.
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from sirt.config.errors import ConfigError
from sirt.config.schema import VerifierSchema
from sirt.models.load import last_logits_only
from sirt.models.tokens import left_padded, verification_ids


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


def verification_prompt(cfg: VerifierSchema, prompt: str, response: str) -> str:
    """The text whose next token is the verdict."""
    return cfg.template.format(prompt=prompt, response=response)


class Verifier:
    """Scores (prompt, response) pairs with the model itself, in batched forward passes."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, cfg: VerifierSchema):
        self.tokenizer, self.cfg = tokenizer, cfg
        if cfg.method == "tf":
            self.true_ids = first_token_ids(tokenizer, cfg.words[0])
            self.false_ids = first_token_ids(tokenizer, cfg.words[1])
        else:
            self.rating_ids = [first_token_ids(tokenizer, r)[0] for r in cfg.ratings]

    def _from_logits(self, logits: torch.Tensor) -> torch.Tensor:
        if self.cfg.method == "tf":
            return tf_scores(logits, self.true_ids, self.false_ids)
        return qe_scores(logits, self.rating_ids)

    def encode(self, pairs: list[tuple[str, str]]) -> dict[str, torch.Tensor]:
        """The left-padded verifier inputs of ``pairs``: prompt and response keep the ids they had
        when sampled (:func:`sirt.models.tokens.verification_ids`)."""
        ids = [verification_ids(self.tokenizer, self.cfg.template, p, r) for p, r in pairs]
        return left_padded(ids, self.tokenizer.pad_token_id)

    @torch.inference_mode()
    def score(self, model: PreTrainedModel, pairs: list[tuple[str, str]], desc: str = "verify") -> list[float]:
        """s in [0, 1] for every (prompt, response); sorted by length so batches pad little."""
        texts = [verification_prompt(self.cfg, p, r) for p, r in pairs]
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        scores = [0.0] * len(texts)
        size = self.cfg.batch_size
        for start in tqdm(range(0, len(order), size), desc=desc, leave=False):
            idx = order[start : start + size]
            enc = {k: v.to(model.device) for k, v in self.encode([pairs[i] for i in idx]).items()}
            positions = (enc["attention_mask"].cumsum(-1) - 1).clamp_min(0)
            # left-padded: the last position's logits are the next token's, and the only ones projected
            last = model(**enc, position_ids=positions, use_cache=False, **last_logits_only(model)).logits[:, -1, :]
            for i, s in zip(idx, self._from_logits(last).tolist()):
                scores[i] = s
        return scores
