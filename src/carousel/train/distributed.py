"""Data-parallel training over processes with PyTorch DDP, started by ``torchrun``.

``torchrun --nproc_per_node=N -m carousel train ...`` starts N processes with ``RANK``,
``LOCAL_RANK`` and ``WORLD_SIZE`` set; :func:`setup` joins them into a process group (gloo on CPU,
nccl on GPU). Every process builds the same global batch and keeps its own rows, DDP averages the
gradients, so N processes with ``batch_size`` B compute what one process computes with B (up to
floating-point summation order). Rank 0 alone writes the run directory.

Several machines: start ``torchrun`` on each with the same rendezvous, e.g. on node ``k`` of 2::

    torchrun --nnodes=2 --node_rank=k --nproc_per_node=4 \\
        --master_addr=HOST0 --master_port=29500 -m carousel train charlm --out /shared/run ...

The run directory must be on a file system every node sees (all ranks read a checkpoint when
resuming). With one process every function here is the identity.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import Tensor
from torch.nn.parallel import DistributedDataParallel


@dataclass(frozen=True)
class Context:
    """Where this process stands: its rank among ``world_size`` processes and its device."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        """Whether this process writes files and prints (rank 0)."""
        return self.rank == 0


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``"auto"``: the process's GPU if there is one, else the CPU; ``"cuda"``: the process's GPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N; got {name!r}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} asked for, but no CUDA device is available")
        if device.index is None:
            device = torch.device("cuda", local_rank)
    return device


def setup(device: str = "auto") -> Context:
    """Join the process group ``torchrun`` describes (if ``WORLD_SIZE`` > 1) and pick the device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Context(device=resolve_device(device))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    chosen = resolve_device(device, local_rank)
    if chosen.type == "cuda":
        torch.cuda.set_device(chosen)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if chosen.type == "cuda" else "gloo")
    return Context(rank=dist.get_rank(), world_size=dist.get_world_size(), device=chosen)


def teardown(context: Context, wait: bool = True) -> None:
    """Leave the process group, after every process got here if ``wait`` (a process that leaves
    while another still communicates can abort it)."""
    if context.world_size > 1 and dist.is_initialized():
        if wait:
            dist.barrier()
        dist.destroy_process_group()


def wrap(model: torch.nn.Module, context: Context) -> torch.nn.Module:
    """``model`` in :class:`~torch.nn.parallel.DistributedDataParallel` (which averages the
    gradients over the processes) when there are several processes, else ``model`` itself."""
    if context.world_size == 1:
        return model
    device_ids = [context.device.index] if context.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids)


def gather_rows(context: Context, columns: dict[str, Tensor]) -> dict[str, Tensor]:
    """Every process's ``(b,)`` tensors concatenated in rank order, as CPU float64 ``(b * N,)``.

    Every process must pass the same names and the same ``b``.
    """
    names = sorted(columns)
    local = torch.stack([columns[name].detach().double() for name in names])  # (k, b)
    if context.world_size > 1:
        local = local.to(context.device)
        parts = [torch.empty_like(local) for _ in range(context.world_size)]
        dist.all_gather(parts, local)
        local = torch.cat(parts, dim=1)  # (k, b * N)
    return {name: row for name, row in zip(names, local.cpu(), strict=True)}


def gather_along(context: Context, tensor: Tensor, dim: int) -> Tensor:
    """Every process's ``tensor`` concatenated along ``dim`` in rank order (equal shapes)."""
    if context.world_size == 1:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(context.world_size)]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts, dim=dim)


def gather_objects(context: Context, value) -> list:
    """Every process's picklable ``value`` (only small, self-made data), in rank order."""
    if context.world_size == 1:
        return [value]
    values = [None] * context.world_size
    dist.all_gather_object(values, value)
    return values


def broadcast_object(context: Context, value):
    """Rank 0's ``value`` on every process."""
    if context.world_size == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def any_process(context: Context, flag: bool) -> bool:
    """Whether ``flag`` is true on any process."""
    if context.world_size == 1:
        return flag
    value = torch.tensor([float(flag)], device=context.device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


class StopRequest:
    """Turns the first SIGINT/SIGTERM into a request to stop after the current step (so that a
    checkpoint can be written); a second one interrupts at once. Use as a context manager."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict = {}

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> StopRequest:
        try:
            for signum in self.SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        except ValueError:  # not the main thread: leave signals alone
            self._previous.clear()
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
