"""Generation with vLLM (``generation.backend=vllm``): the solver's samples, fast, on a GPU.

Same interface and return type as :func:`sirt.stages.generation.sample`. The engine is built once per
process with dummy weights from the current model's config and tokenizer, and receives the current
weights in place (the merged model of the round, whatever its source: hub, GGUF or checkpoint), the
way TRL's colocated vLLM does. Log-probs are vLLM's ``raw_logprobs`` of the sampled tokens: computed
before temperature, top-k and top-p, i.e. under the plain model, which is what U needs. Prompts are
passed as the token ids of :mod:`sirt.models.tokens`, exactly as the transformers backend encodes them.

Memory: the engine shares the GPU with HF verification and SFT, so it sleeps between calls
(``enable_sleep_mode``). A call wakes the weights, pushes the model's weights if the loop changed them
since the last push (:mod:`sirt.models.version`: every SFT round bumps the number; tensor metadata would
miss PEFT's merges, which write through ``.data``), wakes the KV cache, generates and sleeps again.
Sleep level 1 (weights to CPU, KV cache dropped), not level 2: level 2 also drops the model's buffers
(rotary cos/sin caches), which ``load_weights`` does not restore and which several releases in the
extra's range lose (vLLM issues 16564, 29341); level 1 costs one host copy of a model per sleep.

One engine per process (the last model architecture asked for: :func:`architecture`, never the config
flags training toggles): :func:`teardown` wakes it if it sleeps (vLLM has unmapped a sleeping engine's
memory, and freeing it then fails in the driver: vLLM issue 36651), deletes it, destroys the distributed
group vLLM made, empties the CUDA cache and removes its temp dir. ``max_model_len`` is capped at the
model's positions (vLLM refuses a longer one). Every sample is its own request with its own seed
(:func:`sirt.plan.seeds.request_seed` of the round's seed, the prompt and the sample's index), so no two
samples share a seed, a resumed round repeats the original (vLLM's worker reseeds with 0 when it starts),
and a prompt's samples do not depend on the batch it is in. ``generation.stop`` stops a request in vLLM;
the response is then cut at the stop as the transformers backend cuts it (one function serves both). Each
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
import json
import os
import socket
import sys
import tempfile

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from sirt.config.errors import InputError
from sirt.config.schema import GenerationSchema
from sirt.models.tokens import encode_all
from sirt.models.version import weights_version
from sirt.plan.seeds import request_seed
from sirt.stages.generation import response_sample
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


TOGGLED = {"use_cache", "pad_token_id", "_name_or_path", "transformers_version", "torch_dtype", "dtype",
           "output_attentions", "output_hidden_states", "return_dict", "_attn_implementation",
           "_attn_implementation_autoset"}
"""Config entries that loading, training and generation set or flip (TRL turns ``use_cache`` off and sets
``pad_token_id``): not the architecture, so never a reason to build the engine again."""


def architecture(model: PreTrainedModel) -> str:
    """The engine's key: the model's config without the entries in :data:`TOGGLED`, and its dtype."""
    entries = {k: v for k, v in model.config.to_dict().items() if k not in TOGGLED}
    return json.dumps(entries, sort_keys=True, default=str) + str(model.dtype)


def max_model_len(model: PreTrainedModel, cfg: GenerationSchema) -> int:
    """``generation.vllm.max_model_len``, capped at the model's positions (vLLM refuses a longer one)."""
    positions = getattr(model.config.get_text_config(), "max_position_embeddings", None)
    return min(cfg.vllm.max_model_len, positions) if positions else cfg.vllm.max_model_len


class Engine:
    """One vLLM engine and what it holds outside vLLM: a temp dir with the model's config and tokenizer,
    its rendezvous port and the environment it set. Nothing touches vllm until :meth:`start`."""

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, cfg: GenerationSchema):
        self.key = architecture(model)
        self.cfg = cfg
        self.max_model_len = max_model_len(model, cfg)
        self.dtype = str(model.dtype).removeprefix("torch.")
        self.spec = tempfile.TemporaryDirectory(prefix="sirt-vllm-")
        model.config.save_pretrained(self.spec.name)
        tokenizer.save_pretrained(self.spec.name)
        self.port = free_port()
        self.llm = None
        self.asleep = False
        self.pushed: int | None = None  # weights_version of the weights the engine holds
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
            max_model_len=self.max_model_len,
            distributed_executor_backend="external_launcher",
            logprobs_mode="raw_logprobs",
            enable_sleep_mode=True,
            seed=0,
        )
        self.made_group = not already and torch.distributed.is_initialized()

    @torch.no_grad()
    def push(self, model: PreTrainedModel) -> None:
        """Copy the model's weights into the engine (TRL's colocate path), if the loop changed them since the
        last push (or this is another model)."""
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
            return self.llm.generate(prompts, params, use_tqdm=True)
        finally:
            self.llm.sleep(level=SLEEP_LEVEL)
            self.asleep = True

    def close(self) -> None:
        """Delete the engine, destroy the distributed group vLLM made, empty the CUDA cache, remove the temp dir."""
        if self.llm is not None:
            if self.asleep:  # a sleeping engine's memory is unmapped: wake it, so freeing it is a plain free
                self.llm.wake_up()
                self.asleep = False
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
    if _current is not None and _current.key != architecture(model):
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


def to_sample(tokenizer: PreTrainedTokenizerBase, completion, stop: list[str]) -> Sample:
    """One vLLM completion as a Sample: its tokens (EOS included) and their raw log-probs, cut at a stop
    string as the transformers backend cuts it."""
    ids = list(completion.token_ids)
    logprobs = [step[token].logprob for token, step in zip(ids, completion.logprobs)]
    return response_sample(tokenizer, ids, logprobs, stop)


def sample(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    cfg: GenerationSchema,
    n: int | None = None,
    greedy: bool = False,
    desc: str = "generate",
    seed: int | None = None,
) -> list[list[Sample]]:
    """``n`` (default N) responses per prompt with their plain-model log-probs, like the transformers backend.

    Sample j of a prompt is drawn with :func:`sirt.plan.seeds.request_seed` of (``seed``, the prompt, j);
    without ``seed``, of torch's initial seed (which the loop sets per round). ``desc`` is accepted for the
    common interface; vLLM shows its own progress bar over the requests.
    """
    vllm = import_vllm()
    n = cfg.n_samples if n is None else n
    llm = engine(model, tokenizer, cfg)
    base_seed = (torch.initial_seed() if seed is None else seed) % 2**31

    def params(prompt: str, j: int):
        return vllm.SamplingParams(
            n=1,
            temperature=0.0 if greedy else cfg.temperature,
            top_p=1.0 if greedy else cfg.top_p,
            top_k=0 if greedy else cfg.top_k,  # 0 = no top-k filter
            max_tokens=cfg.max_new_tokens,
            logprobs=0,  # the sampled token's log-prob only
            stop_token_ids=[tokenizer.eos_token_id],
            stop=list(cfg.stop) or None,
            include_stop_str_in_output=True,  # the cut is response_sample's, at a token boundary
            seed=request_seed(base_seed, prompt, j),
        )

    ids = encode_all(tokenizer, prompts)
    requests = [(i, j) for i in range(len(prompts)) for j in range(n)]
    outputs = llm.generate(model, [vllm.TokensPrompt(prompt_token_ids=ids[i]) for i, _ in requests],
                           [params(prompts[i], j) for i, j in requests])
    samples = [to_sample(tokenizer, out.outputs[0], list(cfg.stop)) for out in outputs]
    return [samples[i * n : (i + 1) * n] for i in range(len(prompts))]
