"""hnm: hard-negative mining for domain-specific retrieval (Meghwani et al., ACL 2025 Industry).

The library is importable without torch; heavy dependencies load inside the stage that needs them. The Python
API (`hnm_cli.api`) is re-exported here on first use: `hnm_cli.embed`, `reduce`, `mine`, `train_reranker`,
`evaluate` (the stages, as functions) and `mine_hard_negatives` (in memory).
"""

from typing import Any

from hnm_cli._version import __version__

_API = ("embed", "reduce", "mine", "train_reranker", "evaluate", "mine_hard_negatives")

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    # Lazy, so `import hnm_cli` (and `hnm --help`) does not pay for numpy and the config machinery.
    if name in _API:
        from hnm_cli import api

        return getattr(api, name)
    raise AttributeError(f"module 'hnm_cli' has no attribute {name!r}")
