"""Teachers: another model that writes the external targets (paper 1 used DeepSeek-V3).

A teacher answers the dataset's questions, never the student's prompts: those carry the
student's chat template and special tokens, which mean nothing to another model. A teacher is
either a model sirt loads itself (any ``model`` config, posed with its own tokenizer) or an
OpenAI-compatible HTTP server, asked through the ``openai`` client (``pip install -e '.[teacher]'``):
``/chat/completions`` by default, the legacy ``/completions`` on request. Requests run
``concurrency`` at a time, each with the client's ``timeout``; the client retries dropped connections,
timeouts and 408/409/429/5xx ``retries`` times (exponential backoff from 0.5 s up to 8 s, a server's
``Retry-After`` of up to 2 minutes honoured), and giving up is one InputError naming the URL and the
last status. The first failure cancels the requests still in flight or waiting.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any, Protocol

from sirt.config.errors import ConfigError, InputError
from sirt.config.schema import DatasetSchema, GenerationSchema, TeacherSchema
from sirt.config.validate import check_teacher
from sirt.loop.organism import load_model
from sirt.models.prompts import pose, user_turn
from sirt.stages.generation import sample


class Teacher(Protocol):
    """What training_rows calls: one response per dataset question, in order."""

    def respond(self, questions: list[str]) -> list[str]: ...


class ModelTeacher:
    """Greedy responses of a locally loaded model, each question posed with the teacher's own template."""

    def __init__(self, cfg: TeacherSchema, dataset: DatasetSchema, generation: GenerationSchema, held_out: set[str]):
        self.cfg, self.dataset, self.generation = cfg, dataset, generation
        self.model, self.tokenizer = load_model(cfg.model, dataset, held_out)

    def respond(self, questions: list[str]) -> list[str]:
        prompts = [pose(q, self.tokenizer, self.cfg.model, self.dataset) for q in questions]
        out = sample(self.model, self.tokenizer, prompts, self.generation, n=1, greedy=True, desc="teacher")
        return [row[0].text for row in out]


class HTTPTeacher:
    """Greedy replies of an OpenAI-compatible server through the ``openai`` client; the API key is read
    from the environment (``api_key_env``; a placeholder when unset, for servers that need none)."""

    def __init__(self, cfg: TeacherSchema, dataset: DatasetSchema):
        if not cfg.base_url:
            raise ConfigError("external.teacher.base_url: an http teacher needs a base URL")
        try:
            import openai
        except ImportError:
            raise InputError("external.teacher.kind=http asks the server through the openai client: "
                             "pip install -e '.[teacher]'") from None
        self.cfg, self.dataset, self.openai = cfg, dataset, openai
        self.url = cfg.base_url.rstrip("/") + ("/chat/completions" if cfg.endpoint == "chat" else "/completions")

    def body(self, question: str) -> dict[str, Any]:
        """The request for one question: the dataset's user turn (chat) or plain template (completions)."""
        body: dict[str, Any] = {"max_tokens": self.cfg.max_tokens, "temperature": 0}
        body["model"] = self.cfg.model_name or self.openai.omit  # omitted: the server's default model
        if self.cfg.endpoint == "chat":
            wrapped = user_turn(self.dataset, question)
            body["messages"] = wrapped if self.cfg.wrap else [{"role": "user", "content": question}]
        else:
            body["prompt"] = self.dataset.prompt_template.format(question=question) if self.cfg.wrap else question
        return body

    def client(self):
        """A client with the run's timeout and retries (the client's own backoff and Retry-After handling)."""
        return self.openai.AsyncOpenAI(base_url=self.cfg.base_url, api_key=os.environ.get(self.cfg.api_key_env) or "-",
                                       timeout=self.cfg.timeout, max_retries=self.cfg.retries)

    async def _post(self, client, body: dict[str, Any]) -> str:
        """One question's reply text, or InputError for a reply that is not a completion."""
        endpoint = client.chat.completions if self.cfg.endpoint == "chat" else client.completions
        raw = await endpoint.with_raw_response.create(**body)
        try:
            choice = raw.parse().choices[0]
            text = choice.message.content if self.cfg.endpoint == "chat" else choice.text
        except (AttributeError, IndexError, TypeError, ValueError):
            text = None
        if not isinstance(text, str):
            raise InputError(f"external.teacher: malformed reply from {self.url}: {raw.http_response.text[:200]!r}")
        return text

    async def _ask(self, client, question: str) -> str:
        """One question's reply; the client's failures, once it stops retrying, as one InputError."""
        openai, tries = self.openai, self.cfg.retries + 1
        try:
            return await self._post(client, self.body(question))
        except openai.APIStatusError as err:
            status = f"HTTP {err.status_code} {err.response.reason_phrase}"
            if err.status_code in (408, 409, 429) or err.status_code >= 500:
                failure = status
            else:  # a refusal no retry would fix (401, 404, 400 ...): the start of the server's reason
                detail = err.response.text[:200].replace("\n", " ")
                raise InputError(f"external.teacher: POST {self.url} answered {status} ({detail})") from None
        except openai.APITimeoutError:
            failure = f"TimeoutError: no reply within {self.cfg.timeout} s"
        except openai.APIConnectionError as err:  # refused, reset, cut short
            cause = root_cause(err)
            failure = f"{type(cause).__name__}: {cause}"
        raise InputError(f"external.teacher: POST {self.url} gave up after {tries} tries, last: {failure}")

    async def _all(self, questions: list[str]) -> list[str]:
        """Replies in order, ``concurrency`` requests at a time; the first failure cancels the rest."""
        limit = asyncio.Semaphore(self.cfg.concurrency)
        async with self.client() as client:
            async def one(question: str) -> str:
                async with limit:
                    return await self._ask(client, question)

            tasks = [asyncio.ensure_future(one(q)) for q in questions]
            try:
                return list(await asyncio.gather(*tasks))
            except BaseException:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                raise

    def respond(self, questions: list[str]) -> list[str]:
        """Replies in the order of ``questions``."""
        return asyncio.run(self._all(questions)) if questions else []


def root_cause(err: BaseException) -> BaseException:
    """The innermost error under the client's wrappers (a ConnectionRefusedError under "Connection error.")."""
    while (inner := err.__cause__ or err.__context__) is not None:
        err = inner
    return err


def make_teacher(raw: dict, dataset: DatasetSchema, generation: GenerationSchema, held_out: set[str]) -> Teacher:
    """The teacher of ``external.teacher``: an HTTP client, or a model loaded (and taught) here."""
    cfg = check_teacher(raw)
    if cfg.kind == "http":
        return HTTPTeacher(cfg, dataset)
    return ModelTeacher(cfg, dataset, generation, held_out)
