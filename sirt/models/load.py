"""Models: the tokenizer and causal LM of a run, from a hub id / local path or built in code.

``model.name_or_path`` loads a real checkpoint with ``from_pretrained`` (a hub id, a directory,
a GGUF file or a file an installed package ships: see :mod:`sirt.models.weights`); without it, sirt
builds the embedded model organism (a small LlamaForCausalLM with a character tokenizer)
and teaches it once (see :mod:`sirt.loop.organism`). Either way the rest of sirt sees the same
``(model, tokenizer)`` pair with left padding for batched generation.
"""

from __future__ import annotations

import inspect
import logging
import string
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    GgufConfig,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)

from sirt.config.schema import ModelSchema, TinySchema
from sirt.models import weights
from sirt.models.prompts import end_of_turn, uses_chat

log = logging.getLogger(__name__)
SPECIAL_TOKENS = ["<pad>", "<eos>", "<unk>"]
ALPHABET = [*string.printable[:95], "\n"]  # printable ASCII and newline


def char_tokenizer() -> PreTrainedTokenizerFast:
    """One token per character; every printable ASCII character has an id."""
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + ALPHABET)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    backend.decoder = decoders.Fuse()
    return prepare_tokenizer(
        PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")
    )


def wide_char_tokenizer(vocab_size: int) -> PreTrainedTokenizerFast:
    """:func:`char_tokenizer` grown to ``vocab_size`` ids (a real model's vocabulary, e.g. Llama 3's 128,256):
    the characters keep their ids and every further id is a word ``<k>`` that decodes and encodes again as
    one token. For random-weight checks at a real model's size (``python -m sirt.gpu_check``)."""
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + ALPHABET)}
    vocab.update({f"<{k}>": k for k in range(len(vocab), vocab_size)})
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"<\d+>|[\s\S]"), behavior="isolated")
    backend.decoder = decoders.Fuse()
    return prepare_tokenizer(
        PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")
    )


def tiny_llama(cfg: TinySchema, vocab_size: int, seed: int) -> LlamaForCausalLM:
    """A randomly initialised LlamaForCausalLM of the organism's size (about 1M parameters)."""
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_heads,
        intermediate_size=cfg.intermediate_size,
        max_position_embeddings=cfg.max_position_embeddings,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=None,
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(config)


def prepare_tokenizer(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """Left padding (batched generation) and a pad token (batched scoring)."""
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def torch_dtype(name: str) -> torch.dtype:
    """``auto``: bf16 on a GPU that has it, float32 elsewhere (CPU bf16 is slow)."""
    if name == "auto":
        cuda_bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if cuda_bf16 else torch.float32
    return getattr(torch, name)


def last_logits_only(model: PreTrainedModel) -> dict[str, int]:
    """``logits_to_keep=1`` where the model's forward takes it (the check ``generate`` makes), else nothing:
    the LM head then projects only the last position onto the vocabulary, not every position."""
    return {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(model.forward).parameters else {}


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_pretrained(
    path: str | Path, cfg: ModelSchema, gguf_file: str | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A causal LM and its tokenizer from a hub id or a directory (e.g. a round checkpoint).

    ``gguf_file`` names a GGUF file in ``path``: transformers reads its tokenizer and unpacks its
    weights into a dense model of ``dtype``. Unpacking is asked for explicitly, because weights left
    in GGUF blocks (transformers' choice where a GGUF kernel is installed) neither train nor save.
    """
    kwargs = {"dtype": torch_dtype(cfg.dtype)}
    if cfg.attn_implementation:
        kwargs["attn_implementation"] = cfg.attn_implementation
    if gguf_file:
        kwargs.update(gguf_file=gguf_file, quantization_config=GgufConfig(dequantize=True))
    tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(path, gguf_file=gguf_file))
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs).to(device())
    model.eval()
    return model, tokenizer


def load_named(cfg: ModelSchema) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The model ``model.name_or_path`` names (hub id, directory, GGUF file or ``pkg://`` file).

    A hub download that fails becomes the one-line :class:`~sirt.models.weights.WeightsUnavailable`.
    A chat model's responses end where its template ends an assistant turn, which is not always
    the tokenizer's EOS (Phi-3): see :func:`end_at_turn_end`.
    """
    if cfg.random_init:
        return random_model(cfg)
    source = weights.check_available(cfg.name_or_path, cfg.gguf_file)
    try:
        model, tokenizer = load_pretrained(source.path, cfg, source.gguf_file)
    except OSError as err:
        if source.local:
            raise
        raise weights.unavailable(cfg.name_or_path, str(err).splitlines()[0]) from None
    return model, end_at_turn_end(tokenizer, cfg)


def random_model(cfg: ModelSchema) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """``model.random_init``: the architecture of ``name_or_path``'s config.json with random weights, made on
    the device in the run's dtype (an 8B model in seconds, no weights read), and its tokenizer; for timing
    and memory checks (``python -m sirt.gpu_check``), never for results."""
    path = weights.resolve(cfg.name_or_path).path
    config = AutoConfig.from_pretrained(path)
    kwargs = {"attn_implementation": cfg.attn_implementation} if cfg.attn_implementation else {}
    with device():
        model = AutoModelForCausalLM.from_config(config, dtype=torch_dtype(cfg.dtype), **kwargs)
    model.eval()
    return model, end_at_turn_end(prepare_tokenizer(AutoTokenizer.from_pretrained(path)), cfg)


def end_at_turn_end(tokenizer: PreTrainedTokenizerBase, cfg: ModelSchema) -> PreTrainedTokenizerBase:
    """A chat model's EOS becomes its template's end of turn: generation stops there and every SFT
    target ends with it (:func:`sirt.models.tokens.target_ids`)."""
    if uses_chat(tokenizer, cfg) and (eot := end_of_turn(tokenizer, cfg)) and eot != tokenizer.eos_token:
        log.info("responses end at %s, the chat template's end of turn (tokenizer EOS was %s)", eot,
                 tokenizer.eos_token)
        tokenizer.eos_token = eot
    return tokenizer


def save(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, path: Path) -> None:
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)

