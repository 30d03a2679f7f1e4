"""Where units of work run: `local` (this process) or `ray` (actors of a Ray cluster). Stages call these; cores
never do (mining takes a runner as a plain argument, `mining.blocks.BlockRunner`).

A unit is ``work(state, item)``, with ``state = setup()`` made once per worker: the model an embed worker
loaded, the vectors a mine worker opened. ``setup`` and ``work`` are module-level functions or dataclasses (they
travel to the workers by pickle) and return plain data; the stage that asked writes every file itself.

    with executors.Session(cfg.executor, cfg.ray_address, progress=True) as session:
        runner = session.runner()        # connects (starts Ray) only now, so up-to-date runs never do
        for i, result in runner.imap(setup, work, items, label="embed m", unit="shard"):
            ...                          # as each unit finishes, in any order
"""

from __future__ import annotations

import contextlib
import importlib.util

from hnm_cli.choices import Executor
from hnm_cli.errors import ConfigError
from hnm_cli.executors.base import MISSING_RAY, Runner, ordered


def require(kind: Executor) -> None:
    """Fail before any work when the executor cannot run here (``ray`` without the extra); imports nothing.

    Raises:
        ConfigError: ``ray`` asked for and not installed (one line naming the extra).
    """
    if kind == Executor.RAY and importlib.util.find_spec("ray") is None:
        raise ConfigError(MISSING_RAY)


class Session:
    """One stage run's executor, opened on first use and closed with the block.

    ``local`` is this process. ``ray`` connects on the first `runner()` call and, when it started Ray itself,
    shuts it down at the end (a caller's own ``ray.init`` is used and left alone).
    """

    def __init__(self, kind: Executor, address: str = "auto", *, progress: bool = False) -> None:
        """Remember what to open.

        Args:
            kind: the executor.
            address: ``ray.init(address=...)`` for ``ray``; "auto" finds a running cluster or starts one.
            progress: runners show a bar of finished units on stderr.
        """
        self.kind = Executor(kind)
        self.address = address
        self.progress = progress
        self._stack = contextlib.ExitStack()
        self._runner: Runner | None = None

    @property
    def distributed(self) -> bool:
        """Whether units run outside this process (stages take their direct path otherwise)."""
        return self.kind != Executor.LOCAL

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def runner(self) -> Runner:
        """The runner, connecting to the executor on the first call.

        Raises:
            ConfigError: ``ray`` without the extra. InputError: no Ray cluster at the address.
        """
        if self._runner is None:
            if self.kind == Executor.LOCAL:
                from hnm_cli.executors.local import LocalRunner

                self._runner = LocalRunner(progress=self.progress)
            else:
                from hnm_cli.executors.ray import connect

                self._runner = self._stack.enter_context(connect(self.address, progress=self.progress))
        return self._runner


__all__ = ["MISSING_RAY", "Runner", "Session", "ordered", "require"]
