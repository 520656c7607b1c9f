"""Generation with vLLM (``generation.backend=vllm``): the solver's samples, fast, on a GPU.

Same interface and return type as :func:`sirt.stages.generation.sample`. The engine is built once per
process with dummy weights from the current model's config and tokenizer, and receives the current
weights in place (the merged model of the round, whatever its source: hub, GGUF or checkpoint), the
way TRL's colocated vLLM does. Log-probs are vLLM's ``raw_logprobs`` of the sampled tokens: computed
before temperature, top-k and top-p, i.e. under the plain model, which is what U needs. Prompts are
passed as the token ids of :mod:`sirt.models.tokens`, exactly as the transformers backend encodes them.

Memory: the engine shares the GPU with HF verification and SFT, so it sleeps between calls
(``enable_sleep_mode``). A call wakes the weights, pushes the model's weights if they changed since
the last push (once per round: training changes them once), wakes the KV cache, generates and sleeps
again. Sleep level 1 (weights to CPU, KV cache dropped), not level 2: level 2 also drops the model's
buffers (rotary cos/sin caches), which ``load_weights`` does not restore and which several releases in
the extra's range lose (vLLM issues 16564, 29341); level 1 costs one host copy of a model per sleep.

One engine per process (the last model architecture asked for): :func:`teardown` deletes it,
destroys the distributed group vLLM made, empties the CUDA cache and removes its temp dir. Each
engine rendezvouses on its own free port (:func:`free_port`), never a fixed ``MASTER_PORT``, so two
processes on one machine (a sweep) do not collide.

Verification stays on HF (:mod:`sirt.stages.verification`), on purpose. TF and QE need the
next-token probabilities of fixed words (every first token of "true"/"false", or of each rating)
normalised among themselves. vLLM's ``logprobs``/``prompt_logprobs`` return the top-k tokens of each
position (k at most ``max_logprobs``, 20 by default) plus the sampled or prompt token: a verifier word
outside the top-k has no log-prob, and a small, uncertain model puts them there often, so the scores
would be wrong exactly where they matter. The full distribution (``-1``) comes back as a Python dict of
the whole vocabulary per position, slower than the HF forward pass it replaces. Recent releases add
``SamplingParams.logprob_token_ids`` (log-probs of chosen ids), which would fit, but not the whole range
``[vllm]`` allows. And verification is one forward pass per pair with only the last position projected
(``logits_to_keep=1``), a small share of a round next to sampling; HF also scores the very weights SFT
trains, with no second copy to keep in step.

vLLM is optional (``pip install -e '.[vllm]'`` on a CUDA machine) and imported only inside functions
here, so a CPU machine never imports it.
"""

from __future__ import annotations

import gc
import importlib.util
import os
import socket
import sys
import tempfile

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from sirt.config.errors import InputError
from sirt.config.schema import GenerationSchema
from sirt.models.tokens import encode_all
from sirt.stages.samples import Sample

MISSING = ("generation.backend=vllm: the package 'vllm' is not installed; install the extra with "
           "pip install -e '.[vllm]' on a CUDA machine, or use generation.backend=transformers")
SLEEP_LEVEL = 1  # weights to CPU, KV cache dropped (level 2 loses the model's buffers: see the docstring)
_handed_out: set[int] = set()  # ports this process has given to engines: never one twice


def require_vllm() -> None:
    """Raise the one-line InputError when vllm is not installed; looks it up without importing it."""
    if importlib.util.find_spec("vllm") is None:
        raise InputError(MISSING)


def import_vllm():
    """The vllm module, or one clear error saying how to get it."""
    require_vllm()
    try:
        import vllm
    except ImportError as err:
        raise InputError(f"generation.backend=vllm: vllm is installed but does not import ({err}); reinstall "
                         "the extra with pip install -e '.[vllm]'") from None
    return vllm


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` now (the OS picks it: bind to port 0), never one handed out before here."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def weights_version(model: PreTrainedModel) -> tuple:
    """What changes when the model's weights do: each tensor's storage and in-place version counter.

    Cheap (no tensor is read); a merge writes new tensors or writes in place, and either shows here.
    """
    return tuple((name, t.data_ptr(), t._version) for name, t in model.state_dict().items())


class Engine:
    """One vLLM engine and what it holds outside vLLM: a temp dir with the model's config and tokenizer,
    its rendezvous port and the environment it set. Nothing touches vllm until :meth:`start`."""

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, cfg: GenerationSchema):
        self.key = model.config.to_json_string()
        self.cfg = cfg
        self.dtype = str(model.dtype).removeprefix("torch.")
        self.spec = tempfile.TemporaryDirectory(prefix="sirt-vllm-")
        model.config.save_pretrained(self.spec.name)
        tokenizer.save_pretrained(self.spec.name)
        self.port = free_port()
        self.llm = None
        self.asleep = False
        self.pushed: tuple | None = None  # weights_version of the weights the engine holds
        self.made_group = False  # whether vLLM initialised torch.distributed (then teardown destroys it)
        self._env: dict[str, str | None] = {}  # what start() changed, put back by close()

    @property
    def path(self) -> str:
        return self.spec.name

    def _setenv(self, name: str, value: str, force: bool = False) -> None:
        if force or name not in os.environ:
            self._env.setdefault(name, os.environ.get(name))
            os.environ[name] = value

    def start(self) -> None:
        """Build the engine with dummy weights (the real ones arrive in :meth:`generate`)."""
        vllm = import_vllm()
        already = torch.distributed.is_available() and torch.distributed.is_initialized()
        for name, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1"), ("MASTER_ADDR", "127.0.0.1")):
            self._setenv(name, value)  # the in-process executor TRL uses needs a one-rank world
        if not already:
            self._setenv("MASTER_PORT", str(self.port), force=True)  # this engine's own rendezvous
        self.llm = vllm.LLM(
            model=self.path,
            load_format="dummy",
            dtype=self.dtype,
            gpu_memory_utilization=self.cfg.vllm.gpu_memory_utilization,
            max_model_len=self.cfg.vllm.max_model_len,
            distributed_executor_backend="external_launcher",
            logprobs_mode="raw_logprobs",
            enable_sleep_mode=True,
            seed=0,
        )
        self.made_group = not already and torch.distributed.is_initialized()

    @torch.no_grad()
    def push(self, model: PreTrainedModel) -> None:
        """Copy the model's weights into the engine (TRL's colocate path), if they changed since the last push."""
        version = weights_version(model)
        if version == self.pushed:
            return
        runner_model = self.llm.llm_engine.model_executor.driver_worker.model_runner.model
        runner_model.load_weights(model.state_dict().items())
        self.llm.reset_prefix_cache()
        self.pushed = version

    def generate(self, model: PreTrainedModel, prompts: list, params: list) -> list:
        """Wake the weights, push the round's, wake the KV cache, generate, sleep again."""
        if self.asleep:
            torch.cuda.empty_cache()  # what verification and SFT left cached goes back before vLLM maps memory
            self.llm.wake_up(tags=["weights"])
        self.push(model)
        if self.asleep:
            self.llm.wake_up(tags=["kv_cache"])
            self.asleep = False
        try:
            return self.llm.generate(prompts, params, use_tqdm=False)
        finally:
            self.llm.sleep(level=SLEEP_LEVEL)
            self.asleep = True

    def close(self) -> None:
        """Delete the engine, destroy the distributed group vLLM made, empty the CUDA cache, remove the temp dir."""
        if self.llm is not None:
            self.llm = None
            gc.collect()
            if "vllm" in sys.modules:  # only an engine that started imported it
                from vllm.distributed.parallel_state import destroy_distributed_environment, destroy_model_parallel

                destroy_model_parallel()
                if self.made_group:
                    destroy_distributed_environment()
            if self.made_group and torch.distributed.is_initialized():
                torch.distributed.destroy_process_group()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        for name, value in self._env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self._env.clear()
        self.spec.cleanup()


_current: Engine | None = None  # the process's one engine


def engine(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, cfg: GenerationSchema) -> Engine:
    """The process's engine for this model's architecture; another architecture replaces it."""
    global _current
    key = model.config.to_json_string()
    if _current is not None and _current.key != key:
        teardown()
    if _current is None:
        new = Engine(model, tokenizer, cfg)
        try:
            new.start()
        except BaseException:
            new.close()
            raise
        _current = new
    return _current


def teardown() -> None:
    """End the process's engine, if any (the loop's last step; safe to call twice or with none)."""
    global _current
    current, _current = _current, None
    if current is not None:
        current.close()


def to_sample(output) -> Sample:
    """One vLLM completion as a Sample: the sampled tokens' raw log-probs, EOS included."""
    logprob = sum(step[token].logprob for token, step in zip(output.token_ids, output.logprobs))
    return Sample(output.text, len(output.token_ids), float(logprob))


def sample(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    cfg: GenerationSchema,
    n: int | None = None,
    greedy: bool = False,
    desc: str = "generate",
) -> list[list[Sample]]:
    """``n`` (default N) responses per prompt with their plain-model log-probs, like the transformers backend.

    ``desc`` is accepted for the common interface; vLLM schedules all prompts at once and shows no bar.
    """
    vllm = import_vllm()
    n = cfg.n_samples if n is None else n
    llm = engine(model, tokenizer, cfg)
    base_seed = torch.initial_seed() % 2**31  # seeded per round by the loop, so a resumed round repeats
    params = [vllm.SamplingParams(
        n=n,
        temperature=0.0 if greedy else cfg.temperature,
        top_p=1.0 if greedy else cfg.top_p,
        top_k=0 if greedy else cfg.top_k,  # 0 = no top-k filter
        max_tokens=cfg.max_new_tokens,
        logprobs=0,  # the sampled token's log-prob only
        stop_token_ids=[tokenizer.eos_token_id],
        seed=(base_seed + i) % 2**31,
    ) for i in range(len(prompts))]
    encoded = [vllm.TokensPrompt(prompt_token_ids=ids) for ids in encode_all(tokenizer, prompts)]
    outputs = llm.generate(model, encoded, params)
    return [[to_sample(o) for o in out.outputs] for out in outputs]
