"""Tokenizers built in code that treat BOS and the chat template like the papers' model families.

Character-level (one token per character; special tokens whole), so no download is needed and any
text round-trips. What differs between the families is what the paper models differ in:

* ``llama3``: the tokenizer adds BOS and the chat template renders it too (Llama-3.x Instruct);
  EOS ``<|end_of_text|>``, a turn ends with ``<|eot_id|>``.
* ``template_bos``: the template renders BOS, the tokenizer adds none (Phi-3.5-like template);
  EOS ``<|endoftext|>``, a turn ends with ``<|end|>``.
* ``base_bos``: the tokenizer adds BOS and there is no template (a base model on plain prompts).
* ``chatml``: neither (SmolLM2-Instruct: ChatML, no BOS anywhere).
* ``organism``: neither, no template either: the embedded organism's own tokenizer.
* ``byte_bpe``: a byte-level BPE (GPT-2 / Llama-3 style merges, trained here on a few lines) on plain
  prompts: ``"A: "`` + ``"The..."`` tokenized together merge into ``"ĠThe"``, apart they do not.
"""

from __future__ import annotations

import string
from collections.abc import Callable

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from sirt.config.compose import compose
from sirt.config.schema import Config
from sirt.config.validate import validate
from sirt.models.load import char_tokenizer, prepare_tokenizer

ALPHABET = [*string.printable[:95], "\n"]

LLAMA3_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
    "{{ m['content'] }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
PHI_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
CHATML_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def char_level(specials: list[str], eos: str, bos: str | None = None, adds_bos: bool = False,
               chat_template: str | None = None) -> PreTrainedTokenizerFast:
    """A character tokenizer with ``specials`` as whole tokens; ``adds_bos`` prepends BOS like Llama's."""
    vocab = {tok: i for i, tok in enumerate(["<pad>", "<unk>", *specials, *ALPHABET])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    backend.decoder = decoders.Fuse()
    if adds_bos:
        backend.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, vocab[bos])])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", unk_token="<unk>",
                                        eos_token=eos, bos_token=bos, additional_special_tokens=specials)
    tokenizer.chat_template = chat_template
    return prepare_tokenizer(tokenizer)


def llama3() -> PreTrainedTokenizerFast:
    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
    return char_level(specials, eos="<|end_of_text|>", bos="<|begin_of_text|>", adds_bos=True,
                      chat_template=LLAMA3_TEMPLATE)


def template_bos() -> PreTrainedTokenizerFast:
    specials = ["<s>", "<|endoftext|>", "<|user|>", "<|assistant|>", "<|end|>"]
    return char_level(specials, eos="<|endoftext|>", bos="<s>", chat_template=PHI_TEMPLATE)


def base_bos() -> PreTrainedTokenizerFast:
    return char_level(["<s>", "</s>"], eos="</s>", bos="<s>", adds_bos=True)


def chatml() -> PreTrainedTokenizerFast:
    return char_level(["<|endoftext|>", "<|im_start|>", "<|im_end|>"], eos="<|endoftext|>",
                      chat_template=CHATML_TEMPLATE)


BPE_CORPUS = ["Q: What is 2 + 3?\nA: The sum is 5.\n#### 5", "The answer is The answer. The end.",
              "Correct? yes no Yes No"] * 20


def byte_bpe() -> PreTrainedTokenizerFast:
    """A byte-level BPE learnt from :data:`BPE_CORPUS`; no BOS, EOS ``<|endoftext|>``, no template."""
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    backend.train_from_iterator(BPE_CORPUS, trainer)
    return prepare_tokenizer(PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|endoftext|>"))


FAMILIES: dict[str, Callable[[], PreTrainedTokenizerFast]] = {
    "llama3": llama3, "template_bos": template_bos, "base_bos": base_bos, "chatml": chatml,
    "organism": char_tokenizer, "byte_bpe": byte_bpe,
}
TURN_ENDS = {"llama3": "<|eot_id|>", "template_bos": "<|end|>", "base_bos": "</s>", "chatml": "<|im_end|>",
             "organism": "<eos>", "byte_bpe": "<|endoftext|>"}


def family_config(name: str) -> Config:
    """A config that formats prompts for family ``name`` as a run would: chat turns where it has a template."""
    chat = name not in ("base_bos", "organism", "byte_bpe")
    return validate(compose(f"model.chat_template={str(chat).lower()}"))
