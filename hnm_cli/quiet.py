"""Silencing the libraries hnm calls for the length of one call, always restored: a notebook that imports hnm keeps
its own transformers progress bars, log levels and stdout."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator


@contextlib.contextmanager
def transformers_bars_off() -> Iterator[None]:
    """transformers' weight-loading bars off inside the block (they would interleave with ours and ignore --quiet)."""
    import transformers

    bars = transformers.utils.logging.is_progress_bar_enabled()
    transformers.utils.logging.disable_progress_bar()
    try:
        yield
    finally:
        if bars:
            transformers.utils.logging.enable_progress_bar()


@contextlib.contextmanager
def libraries_quiet(enabled: bool = True) -> Iterator[None]:
    """With `enabled`, silence transformers' bars and the info/warning logs of transformers and sentence-transformers."""
    if not enabled:
        yield
        return
    import transformers

    loggers = [logging.getLogger(n) for n in ("sentence_transformers", "transformers")]
    levels = [lg.level for lg in loggers]
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with transformers_bars_off():
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)
        transformers.logging.set_verbosity(verbosity)
