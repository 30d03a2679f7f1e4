"""The interface every executor implements (`Runner`) and what the runners share, imported by `local` and `ray`.

Apart from the package (`hnm_cli.executors`, which opens a runner) so that the arrow goes one way: the package
imports `local` and `ray` when it opens one, and they import this module, never the package.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Protocol, TypeVar

S = TypeVar("S")
T = TypeVar("T")
R = TypeVar("R")

MISSING_RAY = "--executor ray needs Ray, an optional extra: pip install 'hnm_cli[ray]'"


class Runner(Protocol):
    """An executor's work loop (`local.LocalRunner`, `ray.RayRunner`)."""

    @property
    def workers(self) -> int:
        """How many units can run at once (CPUs of the cluster; 1 in this process)."""
        ...

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
        """Yield ``(index, work(state, items[index]))`` as units finish, in any order.

        Args:
            setup: builds a worker's state, once per worker.
            work: one unit.
            items: the units; ``str(item)`` names a unit in progress and errors.
            label: what the units are part of (the progress bar, error messages).
            unit: the progress bar's unit word.
            cpus_per_worker: CPUs one worker uses (its threads), so workers x threads never exceed the CPUs.

        Raises:
            HnmError: a unit failed (after the executor's retries), naming the unit.
        """
        ...

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
        ...


def ordered(results: Iterator[tuple[int, R]], n: int) -> list[R]:
    """Results of `Runner.imap` over ``n`` items, in item order (the shared body of every runner's `map`)."""
    slots: dict[int, R] = dict(results)
    return [slots[i] for i in range(n)]
