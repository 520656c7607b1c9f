"""Token identity: what sampling, verification and training really feed the model, and whether it agrees.

The ids are read back from the stages themselves (the batch generation conditions on, the batch the
verifier scores, a batch of TRL's own collator from the SFTTrainer sirt builds), not recomputed, so a
stage that tokenizes on its own (a second BOS, a merge across the prompt/response boundary, a target
without EOS, a cut by ``trainer.max_length``) shows up here. Library functions: tests and a preflight
check call them on any tokenizer.
"""

from __future__ import annotations

import tempfile

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from sirt.config.schema import TinySchema, TrainerSchema, VerifierSchema
from sirt.models.load import tiny_llama
from sirt.models.tokens import IGNORE, encode, target_ids, template_pieces
from sirt.stages.generation import encode_prompts
from sirt.stages.training import trainer as sft_trainer
from sirt.stages.verification import Verifier

STAGES = ("generate", "verify", "train")
# a model too small to matter: SFTTrainer only needs one over the vocabulary to build its batches
TINY = TinySchema(hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32, max_position_embeddings=4096)


def tiny_model(tokenizer: PreTrainedTokenizerBase) -> PreTrainedModel:
    """A small LM over ``tokenizer``'s vocabulary: SFTTrainer needs a model to build its data. Built
    under a forked RNG, so that checking the tokens leaves a run's random state as it was."""
    with torch.random.fork_rng(devices=[]):
        return tiny_llama(TINY, len(tokenizer), seed=0)


def unpadded(batch: dict) -> list[int]:
    """The first row of a left-padded batch without its padding."""
    return batch["input_ids"][0][batch["attention_mask"][0].bool()].tolist()


def stage_ids(
    tokenizer: PreTrainedTokenizerBase,
    prompt: str,
    response: str,
    verifier: VerifierSchema,
    trainer: TrainerSchema,
    model: PreTrainedModel | None = None,
) -> dict[str, list[int]]:
    """What each stage feeds the model for one (prompt, response), read from the stages themselves.

    ``generate``: the prompt ids generation conditions on, then the response's ids and EOS (the
    sequence of a sample that decodes to ``response``). ``verify``: the verifier's whole input.
    ``train`` and ``train_labels``: a batch of TRL's own collator, from the SFTTrainer sirt builds
    with ``trainer`` (on ``model``, or a tiny one over this vocabulary).
    """
    generated = unpadded(encode_prompts(tokenizer, [prompt]))
    verified = unpadded(Verifier(tokenizer, verifier).encode([(prompt, response)]))
    verified = verified[len(template_head(tokenizer, verifier.template)):]  # judged examples before {prompt}
    with tempfile.TemporaryDirectory(prefix="sirt-tokens-") as out:
        built = sft_trainer(model if model is not None else tiny_model(tokenizer), tokenizer,
                            [{"prompt": prompt, "completion": response}], trainer, seed=0, lora=None,
                            output_dir=out, progress=False)
        kept = len(built.train_dataset) > 0  # TRL drops a row that max_length leaves without a target token
        batch = next(iter(built.get_train_dataloader())) if kept else None
    train, labels = ([], []) if batch is None else (batch["input_ids"][0].tolist(), batch["labels"][0].tolist())
    return {"generate": generated + target_ids(tokenizer, response), "verify": verified, "train": train,
            "train_labels": labels}


def template_head(tokenizer: PreTrainedTokenizerBase, template: str) -> list[int]:
    """The ids of what a verifier template shows before ``{prompt}`` (a base model's judged examples); the
    verifier tokenizes it on its own, so the prompt + response part that follows is compared alone."""
    pieces = template_pieces(template, {"prompt": "\0prompt\0", "response": "\0response\0"})
    return [i for piece in pieces[: pieces.index("\0prompt\0")] for i in encode(tokenizer, piece)]


def first_difference(a: list[int], b: list[int]) -> int:
    """The first position where ``a`` and ``b`` differ (the shorter length if one is a prefix of the other)."""
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def token_identity(tokenizer: PreTrainedTokenizerBase, stages: dict[str, list[int]], prompt: str,
                   response: str) -> tuple[bool, str]:
    """Whether the stages agree token for token on prompt + response: (ok, what differs first).

    Generation and training must be the same sequence (prompt, response, EOS), the verifier's must
    start with its prompt + response part, training must learn the response and EOS only, and no
    sequence may open with two BOS.
    """
    n_prompt, n_response = len(encode(tokenizer, prompt)), len(encode(tokenizer, response))
    shown = tokenizer.convert_ids_to_tokens

    def at(name: str, ids: list[int], i: int) -> str:
        return f"{name} has {shown(ids[i : i + 3])}"

    generated, n = stages["generate"], n_prompt + n_response
    if tokenizer.bos_token_id is not None and generated[:2] == [tokenizer.bos_token_id] * 2:
        return False, f"generation's prompt opens with two BOS {shown(generated[:2])}"
    for name, ids, length in (("train", stages["train"], len(generated)), ("verify", stages["verify"], n)):
        i = first_difference(generated[:length], ids[:length])
        if i == len(ids) < length:
            return False, f"{name} stops after {i} of generate's {length} tokens (trainer.max_length cuts it?)"
        if i < length:
            return False, (f"{name} differs from generate at token {i} of {length}: "
                           f"{at('generate', generated, i)}, {at(name, ids, i)}")
    if len(stages["train"]) != len(generated):
        return False, f"train has {len(stages['train'])} tokens, generate {len(generated)}"
    learned = [IGNORE] * n_prompt + generated[n_prompt:]
    i = first_difference(learned, stages["train_labels"])
    if i < len(learned):
        return False, (f"train's labels differ from the response and EOS at token {i} (the prompt has {n_prompt}): "
                       f"{stages['train_labels'][i : i + 3]} instead of {learned[i : i + 3]}")
    decoded = tokenizer.decode(generated[n_prompt:n], skip_special_tokens=True)
    if decoded != response:
        return False, f"the response's ids decode to {decoded!r}, not {response!r}"
    return True, f"{n_prompt} prompt + {n_response} response tokens, identical in {', '.join(STAGES)}"
