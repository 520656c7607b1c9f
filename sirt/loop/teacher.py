"""Teachers: another model that writes the external targets (paper 1 used DeepSeek-V3).

A teacher is either a model sirt loads itself (any ``model`` config: for the embedded default,
an organism taught longer) or an OpenAI-compatible HTTP endpoint (``/v1/completions``),
with a timeout, retries and one clear error when it cannot be reached.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from typing import Protocol

from sirt.config.errors import InputError
from sirt.config.schema import DatasetSchema, GenerationSchema, TeacherSchema
from sirt.config.validate import teacher_schema
from sirt.loop.organism import load_model
from sirt.stages.generation import sample


class Teacher(Protocol):
    def respond(self, prompts: list[str]) -> list[str]: ...


class ModelTeacher:
    """Greedy responses of a locally loaded model."""

    def __init__(self, cfg: TeacherSchema, dataset: DatasetSchema, generation: GenerationSchema, held_out: set[str]):
        self.model, self.tokenizer = load_model(cfg.model, dataset, held_out)
        self.generation = generation

    def respond(self, prompts: list[str]) -> list[str]:
        out = sample(self.model, self.tokenizer, prompts, self.generation, n=1, greedy=True, desc="teacher")
        return [row[0].text for row in out]


class HTTPTeacher:
    """Completions from an OpenAI-compatible server; the key is read from the environment."""

    def __init__(self, cfg: TeacherSchema):
        if not cfg.base_url:
            raise InputError("external.teacher.base_url: an http teacher needs a base URL")
        self.cfg = cfg
        self.url = cfg.base_url.rstrip("/") + "/completions"

    def _post(self, prompt: str) -> str:
        body = {"model": self.cfg.model_name, "prompt": prompt, "max_tokens": self.cfg.max_tokens, "temperature": 0}
        headers = {"Content-Type": "application/json"}
        if key := os.environ.get(self.cfg.api_key_env):
            headers["Authorization"] = f"Bearer {key}"
        request = urllib.request.Request(self.url, json.dumps(body).encode(), headers)
        with urllib.request.urlopen(request, timeout=self.cfg.timeout) as response:
            reply = json.loads(response.read())
        try:
            return str(reply["choices"][0]["text"])
        except (KeyError, IndexError, TypeError):
            raise InputError(f"external.teacher: malformed reply from {self.url}: {str(reply)[:200]}") from None

    def _ask(self, prompt: str) -> str:
        last: Exception | None = None
        for attempt in range(self.cfg.retries):
            try:
                return self._post(prompt)
            except (urllib.error.URLError, TimeoutError, ConnectionError, json.JSONDecodeError) as err:
                last = err
                time.sleep(min(2.0**attempt * 0.1, 2.0))
        reason = getattr(last, "reason", last)
        raise InputError(f"external.teacher.base_url={self.cfg.base_url}: no valid reply after "
                         f"{self.cfg.retries} tries ({reason})")

    def respond(self, prompts: list[str]) -> list[str]:
        return [self._ask(p) for p in prompts]


def make_teacher(raw: dict, dataset: DatasetSchema, generation: GenerationSchema, held_out: set[str]) -> Teacher:
    cfg = teacher_schema(raw)
    if cfg.kind == "http":
        return HTTPTeacher(cfg)
    if cfg.kind == "model":
        return ModelTeacher(cfg, dataset, generation, held_out)
    raise InputError(f"external.teacher.kind={cfg.kind!r}: must be model or http")
