"""The NeMo engine: streaming Sortformer + multitalker Parakeet, one batched step.

Importing this package needs torch and NeMo (the ``hubbub[nemo]`` extra); nothing else in
hubbub imports it unless the ``nemo`` engine is chosen.
"""

from hubbub.engines.nemo.config import NemoEngineConfig

__all__ = ["NemoEngine", "NemoEngineConfig"]


def __getattr__(name: str):
    # The engine pulls in torch and NeMo (slow imports): only when asked for.
    if name == "NemoEngine":
        from hubbub.engines.nemo.engine import NemoEngine

        return NemoEngine
    raise AttributeError(name)
