"""Running under `torchrun`: launch detection, process group set-up and metric reduction.

torch is imported inside the functions: the CLI asks `is_main_process()` before any of it loads.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from toolbox.errors import ToolboxError

if TYPE_CHECKING:
    import torch


def launch_ranks() -> tuple[int, int, int]:
    """(rank, world size, local rank) as `torchrun` sets them; (0, 1, 0) when run alone."""
    return (int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1")),
            int(os.environ.get("LOCAL_RANK", "0")))


def is_main_process() -> bool:
    """Whether this process is rank 0 (the one that shows progress and writes the run)."""
    return launch_ranks()[0] == 0


@dataclass
class DistContext:
    """Where this process stands: rank 0 of 1 when not launched by `torchrun`."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialized_here: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def all_reduce_sum(self, values: list[float] | torch.Tensor) -> torch.Tensor:
        """Sum a vector of numbers over every rank (float64, on the CPU for gloo/nccl alike)."""
        import torch
        import torch.distributed as dist

        tensor = torch.as_tensor(values, dtype=torch.float64)
        if not self.enabled:
            return tensor
        if dist.get_backend() == "nccl":
            tensor = tensor.cuda()
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor.cpu()

    def all_finite(self, loss: torch.Tensor) -> bool:
        """Whether the loss is finite on every rank, so all ranks stop together (one rank
        raising alone would leave the others waiting in the gradient all-reduce)."""
        import torch
        import torch.distributed as dist

        flag = torch.isfinite(loss.detach()).float().reshape(1)
        if self.enabled:
            dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        return bool(flag.item())

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's value of a picklable `obj`, on every rank."""
        if not self.enabled:
            return obj
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def sync_buffers(self, module: torch.nn.Module) -> None:
        """Give every rank rank 0's buffers (BatchNorm running statistics).

        Each rank updates them from its own batches, and DDP only broadcasts them at the next
        training forward: without this, the ranks would validate slightly different models
        and the reduced accuracy would not be the saved model's (one image in 359 was seen).
        """
        if not self.enabled:
            return
        import torch.distributed as dist

        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)

    def barrier(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            dist.barrier()

    def close(self) -> None:
        import torch.distributed as dist

        if self.initialized_here and dist.is_initialized():
            dist.destroy_process_group()


def setup_distributed(device_spec: str) -> tuple[DistContext, torch.device]:
    """Join the process group `torchrun` describes (env vars), or run alone.

    gloo on the CPU, nccl on CUDA; each rank takes the GPU of its local rank.
    """
    import torch
    import torch.distributed as dist

    from toolbox.devices import resolve_device

    rank, world_size, local_rank = launch_ranks()
    if world_size <= 1:
        return DistContext(), resolve_device(device_spec)
    device = resolve_device(device_spec)
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise ToolboxError(f"local rank {local_rank} has no GPU "
                               f"({torch.cuda.device_count()} visible)",
                               "use --nproc_per_node no larger than the GPU count")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    elif device.type == "cpu":
        backend = "gloo"
    else:
        raise ToolboxError(f"distributed training is not supported on {device.type}",
                           "use --device cpu or cuda under torchrun")
    initialized_here = False
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
        initialized_here = True
    return DistContext(rank, world_size, local_rank, initialized_here), device
