"""The local executor: every unit in this process, in order, with one state.

`--executor local` stages take their direct path and do not go through it; it is the reference the Ray runner is
held to, and lets tests check a stage's or a core's unit split (`mining.blocks`) without a cluster.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

from hnm_cli.executors.base import ordered

S = TypeVar("S")
T = TypeVar("T")
R = TypeVar("R")


class LocalRunner:
    """`hnm_cli.executors.Runner` in this process; a unit's exception propagates as it is."""

    def __init__(self, *, progress: bool = False, workers: int = 1) -> None:
        """Args:
        progress: a bar of finished units on stderr.
        workers: what `workers` reports (how many blocks a core plans for); units still run one at a time.
        """
        self.progress = progress
        self._workers = workers

    @property
    def workers(self) -> int:
        """How many workers units are planned for."""
        return self._workers

    def imap(
        self,
        setup: Callable[[], S],
        work: Callable[[S, T], R],
        items: Sequence[T],
        *,
        label: str,
        unit: str = "unit",
        cpus_per_worker: int = 1,
    ) -> Iterator[tuple[int, R]]:
        """Run the units one after the other (see `Runner.imap`)."""
        from tqdm import tqdm

        if not items:
            return
        state = setup()
        with tqdm(total=len(items), desc=label, unit=unit, disable=not self.progress, file=sys.stderr) as bar:
            for i, item in enumerate(items):
                result = work(state, item)
                bar.update(1)
                yield i, result

    def map(
        self,
        setup: Callable[[], S],
        work: Callable[[S, T], R],
        items: Sequence[T],
        *,
        label: str,
        unit: str = "unit",
        cpus_per_worker: int = 1,
    ) -> list[R]:
        """`imap`'s results in item order."""
        return ordered(self.imap(setup, work, items, label=label, unit=unit), len(items))
