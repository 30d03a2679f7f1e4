"""Silencing the libraries hnm calls for the length of one call, always restored: a notebook that imports hnm keeps
its own transformers progress bars, log levels and stdout."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any


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


_TQDM_DISABLE_POSITION = 10  # tqdm(iterable, desc, total, leave, file, ncols, mininterval, maxinterval, miniters,
# ascii, disable, ...): the index of `disable` among the positional arguments


@contextlib.contextmanager
def tqdm_bars_off() -> Iterator[None]:
    """Every tqdm bar created inside the block is disabled, then tqdm is as it was.

    For bars a library shows with no switch to turn them off (sentence-transformers' "Computing widget examples"
    while a trainer is built). tqdm reads its TQDM_* environment once, at import, so the constructor is wrapped.
    """
    from tqdm import std

    original = std.tqdm.__dict__["__init__"]

    def quiet_init(self: Any, *args: Any, **kwargs: Any) -> None:
        if len(args) > _TQDM_DISABLE_POSITION:
            args = (*args[:_TQDM_DISABLE_POSITION], True, *args[_TQDM_DISABLE_POSITION + 1 :])
        else:
            kwargs["disable"] = True
        original.__get__(self, type(self))(*args, **kwargs)

    std.tqdm.__init__ = quiet_init
    try:
        yield
    finally:
        std.tqdm.__init__ = original


@contextlib.contextmanager
def libraries_quiet(enabled: bool = True) -> Iterator[None]:
    """With `enabled`, silence every tqdm bar and the info/warning logs of transformers and sentence-transformers."""
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
        with transformers_bars_off(), tqdm_bars_off():
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)
        transformers.logging.set_verbosity(verbosity)
