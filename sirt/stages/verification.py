"""Self-verification: the model scores its own responses, s in [0, 1], from one forward pass.

Only the last position goes through the LM head (``logits_to_keep=1`` where the model takes it), so
a batch's logits are batch x vocab whatever the length of the texts, and no KV cache is built
(``use_cache=False``: one pass has no next step; the cache of 256 texts of an 8B model would be ~28 GiB).

The method (``verifier.method``: TF, QE, ... in :mod:`sirt.models.verdicts`) reads its score from the
next-token distribution over the first tokens of its answers. No free text is generated or parsed.
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from sirt.config.schema import VerifierSchema
from sirt.models.load import last_logits_only
from sirt.models.tokens import left_padded, verification_ids
from sirt.models.verdicts import method


def verification_prompt(cfg: VerifierSchema, prompt: str, response: str) -> str:
    """The text whose next token is the verdict."""
    return cfg.template.format(prompt=prompt, response=response)


class Verifier:
    """Scores (prompt, response) pairs with the model itself, in batched forward passes."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, cfg: VerifierSchema):
        self.tokenizer, self.cfg, self.method = tokenizer, cfg, method(cfg)
        self.groups = self.method.token_groups(tokenizer, cfg)  # first tokens of each answer, as the method reads

    def _from_logits(self, logits: torch.Tensor) -> torch.Tensor:
        return self.method.scores(logits, self.groups)

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
