"""Training under a multi-process launcher (`torchrun`, `accelerate launch`): which rank this process is, its
device, and how rank 0 decides for every rank.

The launcher starts one process per device with RANK, WORLD_SIZE and LOCAL_RANK (and MASTER_ADDR/PORT) in the
environment; each runs the same `hnm train-reranker` command. Rank 0 owns the artifact: it checks the inputs, takes
the output lock, builds the examples and writes checkpoints, model and manifest. `once` runs such a step on rank 0
only and hands its result, or the fact that it failed, to every other rank, so a bad input stops all ranks at the
same point with one `Error:` line (rank 0's) instead of leaving them waiting in a collective.

Reading the environment imports nothing; only a multi-process run imports torch.distributed, and it joins the
process group the launcher prepared (the Hugging Face trainer would join the same group a moment later).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from hnm_cli.errors import ConfigError, HnmError, StoppedError

T = TypeVar("T")


@dataclass(frozen=True)
class Launch:
    """Where this process stands in its launch: rank `rank` of `world_size`, device index `local_rank` on its node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        """True when several processes train together (a launcher started them)."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True for the process that reads inputs, writes the artifact and reports errors (rank 0)."""
        return self.rank == 0


def current_launch(environ: Mapping[str, str] | None = None) -> Launch:
    """The launch this process belongs to, from the variables torchrun and accelerate set; one process without them.

    Raises:
        ConfigError: the variables are set but are not integers, or RANK is outside [0, WORLD_SIZE).
    """
    env = os.environ if environ is None else environ
    if "WORLD_SIZE" not in env:
        return Launch()
    try:
        world = int(env["WORLD_SIZE"])
        rank = int(env.get("RANK", "0"))
        local = int(env.get("LOCAL_RANK", str(rank)))
    except ValueError as err:
        raise ConfigError(f"launcher environment: RANK/WORLD_SIZE/LOCAL_RANK must be integers ({err})") from None
    if world < 1 or not 0 <= rank < world or local < 0:
        raise ConfigError(f"launcher environment: RANK={rank} is not within WORLD_SIZE={world}")
    return Launch(rank=rank, world_size=world, local_rank=local)


def rank_device(device: str, launch: Launch) -> str:
    """The device one rank trains on: `cpu`, or the GPU of its LOCAL_RANK for `auto` / `cuda`.

    A single process keeps the word as given (resolved later as before). Several processes each need their own
    device: `cuda:N` would put every rank on one GPU and `mps` has no multi-process backend, so both are refused.

    Raises:
        ConfigError: a device that cannot be shared out per rank, or fewer GPUs on this node than ranks.
    """
    if not launch.distributed or device == "cpu":
        return device
    if device.startswith("cuda:") or device == "mps":
        raise ConfigError(
            f"--device {device}: with {launch.world_size} processes each rank trains on the GPU of its LOCAL_RANK; "
            "use --device cuda (or auto), or --device cpu"
        )
    import torch

    if not torch.cuda.is_available():
        if device == "cuda":
            raise ConfigError(f"--device cuda: no CUDA device is visible (torch {torch.__version__}); use --device cpu")
        return "cpu"
    count = torch.cuda.device_count()
    if launch.local_rank >= count:
        raise ConfigError(
            f"LOCAL_RANK {launch.local_rank}: this node has {count} CUDA device(s); start at most {count} "
            "processes per node (--nproc_per_node)"
        )
    return f"cuda:{launch.local_rank}"


def join(launch: Launch, device: str) -> None:
    """Join the launcher's process group (gloo for CPU ranks; NCCL for GPU tensors, gloo for the rest).

    A no-op for one process and when the group exists already (the caller or accelerate made it).
    """
    if not launch.distributed:
        return
    import torch.distributed as dist

    if dist.is_initialized():
        return
    if device.startswith("cuda"):
        import torch

        torch.cuda.set_device(device)
        # Objects (`once`) travel on CPU tensors: gloo for those, NCCL for the trainer's gradients.
        dist.init_process_group(backend="cpu:gloo,cuda:nccl")
    else:
        dist.init_process_group(backend="gloo")


def once(launch: Launch, step: Callable[[], T]) -> T:
    """Run `step` on rank 0 only and return its result on every rank.

    When it fails on rank 0, rank 0 raises its own error (the CLI prints it) and every other rank raises
    `StoppedError`, which the CLI turns into exit 1 without a second message. Any exception counts, so no rank is
    left waiting for an answer that will never come.
    """
    if not launch.distributed:
        return step()
    import torch.distributed as dist

    box: list[Any] = [None]
    if launch.is_main:
        try:
            value = step()
        except BaseException as err:
            what = err.message if isinstance(err, HnmError) else f"{type(err).__name__} on rank 0"
            box[0] = ("failed", what)
            dist.broadcast_object_list(box, src=0)
            raise
        box[0] = ("ok", value)
        dist.broadcast_object_list(box, src=0)
        return value
    dist.broadcast_object_list(box, src=0)
    status, value = box[0]
    if status != "ok":
        raise StoppedError(f"rank {launch.rank}: stopped because rank 0 failed ({value})")
    result: T = value
    return result


def together(launch: Launch, step: Callable[[], T]) -> T:
    """Run `step` on every rank; when it fails on any of them, every rank stops here.

    The first rank that failed raises its own error (one `Error:` line, whichever ranks failed); the others
    raise `StoppedError`. For work each rank must do itself, such as loading the base model.
    """
    if not launch.distributed:
        return step()
    import torch.distributed as dist

    error: BaseException | None = None
    value: Any = None
    try:
        value = step()
    except Exception as err:  # noqa: BLE001  (re-raised below, on this rank or as StoppedError)
        error = err
    notes: list[Any] = [None] * launch.world_size
    what = None if error is None else (error.message if isinstance(error, HnmError) else type(error).__name__)
    dist.all_gather_object(notes, what)
    failed = [r for r, note in enumerate(notes) if note is not None]
    if not failed:
        result: T = value
        return result
    if error is not None and launch.rank == failed[0]:
        raise error
    raise StoppedError(f"rank {launch.rank}: stopped because rank {failed[0]} failed ({notes[failed[0]]})") from error
