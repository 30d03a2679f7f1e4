"""The Ray executor: units of work on Ray actors. `ray` (the optional extra) is imported only inside functions here.

Who writes the files: the driver. Workers return plain data (a shard's vectors; a block's per-pair results) and
the hnm process that asked writes every shard, marker and row file through `hnm_cli.artifacts`, exactly as a local
run does. Why, rather than workers writing to a shared filesystem:

- the same bytes by construction: one writer, one code path for files, whatever ran the unit;
- the same atomicity and locking: the driver's `output_lock`, temp-and-rename writes and staging folders hold as
  they are (workers writing would need the lock and `.tmp` clean-up to work across hosts, which pids cannot);
- a killed driver leaves what a killed local run leaves (finished shards with their markers), so a rerun resumes
  the same way, and the manifest is written last by the driver;
- outputs need no shared filesystem. Inputs do: mine workers open the vector shards by path (memmapped, never
  copied through Ray), and embed workers load models from the model cache (`HNM_CACHE_DIR`) or the packages.

The price is moving results through Ray's object store to the driver: 2048 x 384 float32 is 3 MB per embed shard,
small next to encoding it; a mine block's results are a few hundred bytes per pair.

Failures: an actor whose process dies (OOM kill, segfault, lost node) is restarted (its ``setup`` runs again) and
its unit retried, up to ``RETRIES`` times each (Ray's ``max_restarts`` / ``max_task_retries``); past that the run
stops with an `HnmError` naming the unit. An exception raised by a unit's code (or by ``setup``, e.g. a model that
does not load) is not retried: the code is deterministic, so the run stops at once with the exception's line.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from hnm_cli.errors import ConfigError, HnmError, InputError
from hnm_cli.executors.base import MISSING_RAY, ordered

S = TypeVar("S")
T = TypeVar("T")
R = TypeVar("R")

RETRIES = 3


@contextlib.contextmanager
def connect(address: str = "auto", *, progress: bool = False) -> Iterator[RayRunner]:
    """A `RayRunner` on the cluster at ``address``; Ray is shut down afterwards if this call started it.

    A process that called ``ray.init`` itself (a notebook, the tests) keeps its connection: it is used as it is,
    ``address`` aside, and left running.

    Args:
        address: ``ray.init(address=...)``; "auto" means ``ray.init()``'s own search (``RAY_ADDRESS``, then the
            latest cluster started on this machine) and a local cluster for this run when none is found.
        progress: a bar of finished units on stderr.

    Raises:
        ConfigError: Ray is not installed. InputError: no Ray cluster at ``address``.
    """
    try:
        import ray
    except ImportError as err:
        raise ConfigError(MISSING_RAY) from err
    started = not ray.is_initialized()
    env = dict(os.environ)
    if started:
        _probe(address)
        try:
            with _ray_logs_quiet():
                ray.init(
                    address=None if address == "auto" else address,
                    include_dashboard=False,
                    configure_logging=False,  # hnm's process keeps its own logging setup
                    log_to_driver=False,  # worker output (library warnings, bars) stays in Ray's log files
                )
        except (ConnectionError, RuntimeError, ValueError, TimeoutError) as err:
            _restore_env(env)
            raise InputError(
                f"--ray-address {address}: cannot connect to a Ray cluster ({_first_line(err)})",
                hint="start one with `ray start --head`, or pass its address (ray start prints it)",
            ) from err
    try:
        yield RayRunner(ray, progress=progress)
    finally:
        if started:
            with _ray_logs_quiet():
                ray.shutdown()
            # ray.init exports settings into os.environ (RAY_AUTH_MODE, PYTHONBREAKPOINT, ...) and shutdown
            # leaves them: put the process's environment back as it was.
            _restore_env(env)


CONNECT_TIMEOUT_S = 10.0


def _probe(address: str) -> None:
    """Fail within CONNECT_TIMEOUT_S when nothing answers at a `HOST:PORT` or `ray://HOST:PORT` address.

    `ray.init` retries a closed port or an unresolvable host for minutes (its GCS reconnect timeouts); one plain
    TCP connect with a deadline tells a typo from a cluster before Ray starts waiting. Other forms ("auto", "local")
    are left to Ray.

    Raises:
        InputError: one line naming the address and why the connect failed.
    """
    target = address.removeprefix("ray://")
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit() or not host:
        return
    host = host.strip("[]")  # [::1]:6379
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as err:
        why = "timed out" if isinstance(err, TimeoutError) else (err.strerror or str(err) or type(err).__name__)
        raise InputError(
            f"--ray-address {address}: nothing answers at {host}:{port} ({why})",
            hint="start one with `ray start --head`, or pass its address (ray start prints it)",
        ) from err


class _Worker:
    """The actor body: ``setup()`` once, then ``work(state, item)`` per unit.

    A failing ``setup`` is kept and raised by every unit, so it reaches the driver as that unit's exception (one
    clear line) instead of as the actor's death, which Ray would retry and report as a crash.
    """

    def __init__(self, setup: Callable[[], Any], work: Callable[[Any, Any], Any]) -> None:
        self.work_fn = work
        self.error: BaseException | None = None
        try:
            self.state = setup()
        except Exception as err:  # reported by the first unit; see the class docstring
            self.error = err

    def work(self, item: Any) -> Any:
        if self.error is not None:
            raise self.error
        return self.work_fn(self.state, item)


class RayRunner:
    """`hnm_cli.executors.Runner` on Ray actors; results come back to this process, in completion order."""

    def __init__(self, ray: Any, *, progress: bool = False) -> None:
        """Wrap a connected ``ray`` module (see `connect`)."""
        self._ray = ray
        self.progress = progress

    @property
    def workers(self) -> int:
        """CPUs of the cluster."""
        return max(1, int(self._ray.cluster_resources().get("CPU", 1)))

    def _largest_node_cpus(self) -> int:
        cpus = [int(n.get("Resources", {}).get("CPU", 0)) for n in self._ray.nodes() if n.get("Alive")]
        return max([1, *cpus])

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
        """Run the units on ``min(len(items), CPUs // cpus_per_worker)`` actors, one unit in flight per actor.

        Raises:
            HnmError: a unit raised, or its actor died more than ``RETRIES`` times; the message names the unit.
        """
        from tqdm import tqdm

        ray = self._ray
        if not items:
            return
        # A worker asking for more CPUs than any node has would wait forever: cap it at the largest node.
        cpus = max(1, min(cpus_per_worker, self._largest_node_cpus()))
        n = max(1, min(len(items), self.workers // cpus))
        actor_class = ray.remote(_Worker)
        actors = [
            actor_class.options(num_cpus=cpus, max_restarts=RETRIES, max_task_retries=RETRIES).remote(setup, work)
            for _ in range(n)
        ]
        pending: dict[Any, tuple[int, Any]] = {}
        queue = iter(range(len(items)))

        def submit(actor: Any) -> None:
            i = next(queue, None)
            if i is not None:
                pending[actor.work.remote(items[i])] = (i, actor)

        bar = tqdm(total=len(items), desc=label, unit=unit, disable=not self.progress, file=sys.stderr)
        try:
            for actor in actors:
                submit(actor)
            while pending:
                (ref,), _ = ray.wait(list(pending), num_returns=1)
                i, actor = pending.pop(ref)
                result = self._result(ref, label, items[i])
                submit(actor)
                bar.update(1)
                yield i, result
        finally:
            bar.close()
            for actor in actors:
                with contextlib.suppress(Exception):
                    ray.kill(actor, no_restart=True)

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
        return ordered(
            self.imap(setup, work, items, label=label, unit=unit, cpus_per_worker=cpus_per_worker), len(items)
        )

    def _result(self, ref: Any, label: str, item: object) -> Any:
        exc = self._ray.exceptions
        try:
            return self._ray.get(ref)
        except exc.RayTaskError as err:
            cause = err.cause if err.cause is not None else err
            what = str(cause) if isinstance(cause, HnmError) else f"{type(cause).__name__}: {_first_line(cause)}"
            raise HnmError(f"{label}: {item} failed on a Ray worker: {what}") from None
        except exc.RayActorError as err:
            raise HnmError(
                f"{label}: {item} failed: its Ray worker died {RETRIES + 1} times ({_first_line(err)})"
            ) from None
        except exc.RayError as err:
            raise HnmError(f"{label}: {item} failed in Ray: {type(err).__name__}: {_first_line(err)}") from None


@contextlib.contextmanager
def _ray_logs_quiet() -> Iterator[None]:
    """Ray's own info/warning logs (startup banner, token notice) off for the block, the level restored after."""
    logger = logging.getLogger("ray")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _restore_env(before: dict[str, str]) -> None:
    for key in set(os.environ) - set(before):
        del os.environ[key]
    for key, value in before.items():
        if os.environ.get(key) != value:
            os.environ[key] = value


def _first_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__
