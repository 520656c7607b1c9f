"""Prompts: how a question becomes the text a model continues, for chat and base models alike.

A chat model was tuned on its own template, so a question posed as bare text is out of
distribution for it. A model with ``model.chat_template: true`` whose tokenizer has a template
gets the question as a user turn (``dataset.chat.user``) and the assistant header; any other
model gets ``dataset.prompt_template``. Self-verification of a chat model continues the same
conversation: the model's answer closes its turn and a new user turn asks the verifier's
question, so the verdict is the first token of the model's reply. Prompts carry their special
tokens as text, because generation, verification and training tokenize them without adding any
(:mod:`sirt.models.tokens`).
"""

from __future__ import annotations

import dataclasses

from transformers import PreTrainedTokenizerBase

from sirt.config.errors import ConfigError
from sirt.config.schema import Config, DatasetSchema, ModelSchema, VerifierSchema

RESPONSE_MARK = "\x00response\x00"  # stands for the model's answer while a template is rendered


def uses_chat(tokenizer: PreTrainedTokenizerBase, model: ModelSchema) -> bool:
    """Chat formatting is asked for and possible (a base model has no template: plain prompts)."""
    return model.chat_template and getattr(tokenizer, "chat_template", None) is not None


def render(tokenizer: PreTrainedTokenizerBase, model: ModelSchema, messages: list[dict], open_turn: bool) -> str:
    """The chat template's text of ``messages``; ``open_turn`` appends the assistant header."""
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=open_turn,
                                         **model.chat_template_kwargs)


def user_turn(dataset: DatasetSchema, question: str) -> list[dict]:
    """The messages that pose ``question``: the dataset's system message (if any) and user turn."""
    system = [{"role": "system", "content": dataset.chat.system}] if dataset.chat.system else []
    return [*system, {"role": "user", "content": dataset.chat.user.format(question=question)}]


def bos_text(tokenizer: PreTrainedTokenizerBase) -> str:
    """The BOS a tokenizer adds on its own, as text: plain prompts are tokenized without it."""
    ids = tokenizer("a")["input_ids"]
    return tokenizer.bos_token if tokenizer.bos_token and ids[:1] == [tokenizer.bos_token_id] else ""


def pose(question: str, tokenizer: PreTrainedTokenizerBase, model: ModelSchema, dataset: DatasetSchema) -> str:
    """The text ``model`` continues for ``question``: chat-formatted, or the dataset's plain template.

    Every model is posed with its own tokenizer: a local teacher gets its template, not the student's.
    """
    if uses_chat(tokenizer, model):
        return render(tokenizer, model, user_turn(dataset, question), open_turn=True)
    return bos_text(tokenizer) + dataset.prompt_template.format(question=question)


def solver_prompt(question: str, tokenizer: PreTrainedTokenizerBase, config: Config) -> str:
    """The text the solver continues for ``question``."""
    return pose(question, tokenizer, config.model, config.dataset)


def verifier_question(config: Config) -> str:
    """The user turn that asks for a verdict, with the verifier's own answer words filled in."""
    chat, verifier = config.dataset.chat, config.verifier
    if verifier.method == "tf":
        return chat.verify_tf.format(true=verifier.words[0], false=verifier.words[1])
    return chat.verify_qe.format(low=verifier.ratings[0], high=verifier.ratings[-1])


def after_response(tokenizer: PreTrainedTokenizerBase, model: ModelSchema, messages: list[dict],
                   open_turn: bool) -> str:
    """What the template renders after the assistant's answer in ``messages`` (which hold RESPONSE_MARK)."""
    text = render(tokenizer, model, messages, open_turn)
    if RESPONSE_MARK not in text:
        raise ConfigError("model.chat_template: this tokenizer's template does not render assistant turns")
    return text.split(RESPONSE_MARK, 1)[1]


def verifier_schema(tokenizer: PreTrainedTokenizerBase, config: Config) -> VerifierSchema:
    """The verifier config of this model: for a chat model, a template that continues the conversation.

    The template is ``{prompt}{response}`` followed by what the chat template renders after an
    answer: the end of the assistant turn, the verifier's question as a user turn, and the next
    assistant header. Plain models keep ``verifier.template``.
    """
    if not uses_chat(tokenizer, config.model):
        return config.verifier
    messages = [*user_turn(config.dataset, "?"), {"role": "assistant", "content": RESPONSE_MARK},
                {"role": "user", "content": verifier_question(config)}]
    suffix = after_response(tokenizer, config.model, messages, open_turn=True)
    return dataclasses.replace(config.verifier, template="{prompt}{response}" + suffix.replace("{", "{{").replace(
        "}", "}}"))


def end_of_turn(tokenizer: PreTrainedTokenizerBase, model: ModelSchema) -> str | None:
    """The special token that closes an assistant turn in the chat template (None if there is none).

    Phi-3's tokenizer says ``<|endoftext|>`` is its EOS while its template ends a turn with
    ``<|end|>``: a response must stop, and be trained to stop, where the template ends the turn.
    """
    messages = [{"role": "user", "content": "?"}, {"role": "assistant", "content": RESPONSE_MARK}]
    ids = tokenizer.encode(after_response(tokenizer, model, messages, open_turn=False), add_special_tokens=False)
    token = tokenizer.added_tokens_decoder.get(ids[0]) if ids else None
    return token.content if token is not None and token.special else None
