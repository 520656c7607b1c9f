"""Prompts: how a question becomes the text a model continues, for chat and base models alike.

A chat model was tuned on its own template, so a question posed as bare text is out of
distribution for it. A model with ``model.chat_template: true`` whose tokenizer has a template
gets the question as a user turn (``dataset.chat.user``) and the assistant header; any other
model gets ``dataset.prompt_template``. Self-verification of a chat model continues the same
conversation: the model's answer closes its turn and a new user turn asks the verifier's
question, so the verdict is the first token of the model's reply. Prompts carry their special
tokens as text, because generation, verification and training tokenize them without adding any
(:mod:`sirt.models.tokens`).

A base model needs more than a bare question (:func:`posed_config`): ``dataset.few_shot`` worked
examples from the train split before its prompt, judged examples before its verifier's question, and
stop strings where its answer ends (else it writes the next question and answers that too).
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence

from transformers import PreTrainedTokenizerBase

from sirt.config.errors import ConfigError
from sirt.config.schema import Config, DatasetSchema, ModelSchema, VerifierSchema
from sirt.models.verdicts import method
from sirt.tasks.problem import Problem
from sirt.tasks.registry import is_correct

RESPONSE_MARK = "\x00response\x00"  # stands for the model's answer while a template is rendered
SHOT_END = "\n\n"  # closes each worked or judged example of a few-shot prompt


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
    return method(config.verifier).question(config.dataset.chat, config.verifier)


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


def few_shot_split(train: Sequence[Problem], dataset: DatasetSchema) -> tuple[list[Problem], list[Problem]]:
    """(shots, pool): ``dataset.few_shot`` worked examples drawn from the train split (seeded by
    ``dataset.seed`` alone, so every round and every resume shows the same ones), and the rest of
    the split, the rounds' prompt pool: no round asks a question whose solution its prompt shows."""
    k = dataset.few_shot
    if k == 0:
        return [], list(train)
    if k >= len(train):
        raise ConfigError(f"dataset.few_shot={k}: the train split has only {len(train)} problems")
    shots = [train[i] for i in random.Random(f"few_shot:{dataset.seed}").sample(range(len(train)), k)]
    shown = {p.question for p in shots}  # a repeated question (generated tasks repeat easy ones) goes too
    pool = [p for p in train if p.question not in shown]
    if not pool:
        raise ConfigError(f"dataset.few_shot={k}: the shots leave no train question for the rounds")
    return shots, pool


def _literal(text: str) -> str:
    """``text`` as a literal part of a ``str.format`` template."""
    return text.replace("{", "{{").replace("}", "}}")


def worked_examples(dataset: DatasetSchema, shots: Sequence[Problem]) -> str:
    """The shots as the plain template poses them, each followed by its reference solution."""
    return "".join(dataset.prompt_template.format(question=p.question) + p.answer + SHOT_END for p in shots)


def wrong_answer(shots: Sequence[Problem], i: int) -> str:
    """A wrong solution to shot ``i``: the next shot's reference that the checker rejects for it."""
    for j in [*range(i + 1, len(shots)), *range(i)]:
        if not is_correct(shots[j].answer, shots[i]):
            return shots[j].answer
    raise ConfigError("dataset.few_shot: every shot has the same answer; the verifier's examples need a wrong one")


def judged_examples(config: Config, shots: Sequence[Problem]) -> str:
    """Each shot judged twice by the verifier's template: its reference with the true word (or the top
    rating), another shot's solution with the false word (or the lowest); the order alternates so that
    neither verdict is always the last one the model reads."""
    verifier = config.verifier
    yes, no = method(verifier).extremes(verifier)
    parts = []
    for i, shot in enumerate(shots):
        prompt = config.dataset.prompt_template.format(question=shot.question)
        pair = [(shot.answer, yes), (wrong_answer(shots, i), no)]
        for response, verdict in pair if i % 2 == 0 else pair[::-1]:
            parts.append(verifier.template.format(prompt=prompt, response=response) + verdict + SHOT_END)
    return "".join(parts)


def posed_config(config: Config, tokenizer: PreTrainedTokenizerBase, shots: Sequence[Problem]) -> Config:
    """The config a run's rounds read for this model, with what a plain (base) model needs.

    For a model on plain prompts: the worked ``shots`` before ``dataset.prompt_template``, the judged
    shots before ``verifier.template`` (after the BOS, if the tokenizer has one: the judged prompt
    then brings its own), and ``dataset.stop`` as ``generation.stop`` when that is empty. A chat model's
    config, and one with no shots and no stop strings (the organism's), come back unchanged.
    """
    if uses_chat(tokenizer, config.model):
        return config
    dataset, verifier, generation = config.dataset, config.verifier, config.generation
    if shots:
        dataset = dataclasses.replace(dataset, prompt_template=_literal(worked_examples(dataset, shots))
                                      + dataset.prompt_template)
        verifier = dataclasses.replace(verifier, template=_literal(bos_text(tokenizer) + judged_examples(config, shots))
                                       + verifier.template)
    if not generation.stop and dataset.stop:
        generation = dataclasses.replace(generation, stop=list(dataset.stop))
    if (dataset, verifier, generation) == (config.dataset, config.verifier, config.generation):
        return config
    return dataclasses.replace(config, dataset=dataset, verifier=verifier, generation=generation)
