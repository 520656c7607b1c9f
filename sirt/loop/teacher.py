"""Teachers: another model that writes the external targets (paper 1 used DeepSeek-V3).

A teacher answers the dataset's questions, never the student's prompts: those carry the
student's chat template and special tokens, which mean nothing to another model. A teacher is
either a model sirt loads itself (any ``model`` config, posed with its own tokenizer) or an
OpenAI-compatible HTTP server: ``/chat/completions`` by default, the legacy ``/completions`` on
request. Requests run a few at a time, each with a timeout; dropped connections, timeouts and
408/429/5xx are retried with exponential backoff (a ``Retry-After`` is honoured, up to
``max_wait``), and giving up is one InputError that names the URL and the last status.
"""

from __future__ import annotations

import http.client
import json
import os
import threading
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from email.message import Message
from email.utils import parsedate_to_datetime
from typing import Any, Protocol

from sirt.config.errors import ConfigError, InputError
from sirt.config.schema import DatasetSchema, GenerationSchema, TeacherSchema
from sirt.config.validate import check_teacher
from sirt.loop.organism import load_model
from sirt.models.prompts import pose, user_turn
from sirt.stages.generation import sample

RETRYABLE = frozenset({408, 425, 429, 500, 502, 503, 504})  # statuses that say "later", not "never"


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


def retry_after(headers: Message | None) -> float | None:
    """Seconds a ``Retry-After`` header asks for (delta-seconds or an HTTP date); None if absent or unreadable."""
    value = headers.get("Retry-After") if headers is not None else None
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    when = when if when.tzinfo else when.replace(tzinfo=UTC)
    return max((when - datetime.now(UTC)).total_seconds(), 0.0)


class HTTPTeacher:
    """Greedy replies of an OpenAI-compatible server; the API key is read from the environment."""

    def __init__(self, cfg: TeacherSchema, dataset: DatasetSchema):
        if not cfg.base_url:
            raise ConfigError("external.teacher.base_url: an http teacher needs a base URL")
        self.cfg, self.dataset = cfg, dataset
        self.url = cfg.base_url.rstrip("/") + ("/chat/completions" if cfg.endpoint == "chat" else "/completions")

    def body(self, question: str) -> dict[str, Any]:
        """The request for one question: the dataset's user turn (chat) or plain template (completions)."""
        body: dict[str, Any] = {"max_tokens": self.cfg.max_tokens, "temperature": 0}
        if self.cfg.model_name:
            body["model"] = self.cfg.model_name
        if self.cfg.endpoint == "chat":
            wrapped = user_turn(self.dataset, question)
            body["messages"] = wrapped if self.cfg.wrap else [{"role": "user", "content": question}]
        else:
            body["prompt"] = self.dataset.prompt_template.format(question=question) if self.cfg.wrap else question
        return body

    def _post(self, body: dict[str, Any]) -> str:
        """One request; the reply's text, or InputError for a reply that no retry would fix."""
        headers = {"Content-Type": "application/json"}
        if key := os.environ.get(self.cfg.api_key_env):
            headers["Authorization"] = f"Bearer {key}"
        request = urllib.request.Request(self.url, json.dumps(body).encode(), headers, method="POST")
        with urllib.request.urlopen(request, timeout=self.cfg.timeout) as response:
            raw = response.read()
        try:
            choice = json.loads(raw)["choices"][0]
            text = choice["message"]["content"] if self.cfg.endpoint == "chat" else choice["text"]
        except (ValueError, KeyError, IndexError, TypeError):
            text = None
        if not isinstance(text, str):
            raise InputError(f"external.teacher: malformed reply from {self.url}: {raw[:200]!r}")
        return text

    def _wait(self, attempt: int, asked: float | None) -> float:
        """Seconds before retry ``attempt + 1``: what the server asked for, else exponential backoff; capped."""
        return min(asked if asked is not None else self.cfg.backoff * 2.0**attempt, self.cfg.max_wait)

    def _refused(self, err: urllib.error.HTTPError) -> InputError:
        """The error for a status no retry would fix (401, 404, 400 ...), with the start of the server's reason."""
        try:
            detail = err.read()[:200].decode(errors="replace").replace("\n", " ")
        except OSError:
            detail = ""
        return InputError(f"external.teacher: POST {self.url} answered HTTP {err.code} {err.reason} ({detail})")

    def _ask(self, question: str, stop: threading.Event) -> str:
        """One question's reply, retried on transient failures; ``stop`` ends the waiting when another failed."""
        body, tries = self.body(question), self.cfg.retries + 1
        for attempt in range(tries):
            try:
                return self._post(body)
            except urllib.error.HTTPError as err:
                if err.code not in RETRYABLE:
                    raise self._refused(err) from None
                failure, asked = f"HTTP {err.code} {err.reason}", retry_after(err.headers)
                err.close()
            except (OSError, http.client.HTTPException) as err:  # refused, reset, timed out, cut short
                failure, asked = f"{type(err).__name__}: {getattr(err, 'reason', err)}", None
            if attempt + 1 < tries and stop.wait(self._wait(attempt, asked)):
                break
        raise InputError(f"external.teacher: POST {self.url} gave up after {tries} tries, last: {failure}")

    def respond(self, questions: list[str]) -> list[str]:
        """Replies in the order of ``questions``, ``concurrency`` requests at a time; the first failure stops all."""
        if not questions:
            return []
        stop = threading.Event()
        with ThreadPoolExecutor(min(self.cfg.concurrency, len(questions)), thread_name_prefix="teacher") as pool:
            futures = [pool.submit(self._ask, q, stop) for q in questions]
            try:
                return [f.result() for f in futures]
            except BaseException:  # an error or a signal: no new requests, no more waiting
                stop.set()
                pool.shutdown(wait=False, cancel_futures=True)
                raise


def make_teacher(raw: dict, dataset: DatasetSchema, generation: GenerationSchema, held_out: set[str]) -> Teacher:
    """The teacher of ``external.teacher``: an HTTP client, or a model loaded (and taught) here."""
    cfg = check_teacher(raw)
    if cfg.kind == "http":
        return HTTPTeacher(cfg, dataset)
    return ModelTeacher(cfg, dataset, generation, held_out)
