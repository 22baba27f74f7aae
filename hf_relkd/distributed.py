"""Collective helpers used by the trainer and the memory queue.

They work with any ``torch.distributed`` backend, including gloo on CPU (which lacks ``ReduceOp.AVG`` and
reduce-scatter), and are no-ops in a single process.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.distributed as dist
from torch import Tensor, nn


def is_distributed() -> bool:
    """True when a process group with more than one process is initialised."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _gather_sizes(n: int, device: torch.device) -> list[int]:
    size = torch.tensor([n], device=device, dtype=torch.long)
    sizes = [torch.zeros_like(size) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, size)
    return [int(s) for s in sizes]


def _all_gather_padded(tensor: Tensor) -> tuple[list[Tensor], list[int]]:
    sizes = _gather_sizes(tensor.shape[0], tensor.device)
    longest = max(sizes)
    padded = tensor
    if tensor.shape[0] < longest:
        padded = torch.cat([tensor, tensor.new_zeros((longest - tensor.shape[0], *tensor.shape[1:]))])
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded.contiguous())
    return [p[:n] for p, n in zip(parts, sizes)], sizes


@torch.no_grad()
def gather_no_grad(tensor: Tensor) -> Tensor:
    """Concatenate ``tensor`` along dim 0 across processes, in rank order (sizes may differ). No gradient."""
    if not is_distributed():
        return tensor
    parts, _ = _all_gather_padded(tensor.detach())
    return torch.cat(parts)


class _GatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tensor: Tensor) -> Tensor:
        parts, sizes = _all_gather_padded(tensor)
        ctx.sizes, ctx.rank = sizes, dist.get_rank()
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad_output: Tensor) -> Tensor:
        # every process computed the same loss on the gathered tensor: the gradient of this process's rows is the sum
        # of the gradients all processes computed for them
        grad = grad_output.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = sum(ctx.sizes[: ctx.rank])
        return grad[start : start + ctx.sizes[ctx.rank]]


def gather_with_grad(tensor: Tensor) -> Tensor:
    """Concatenate ``tensor`` along dim 0 across processes, in rank order, keeping the autograd graph.

    Each process then computes the same loss on the global batch; with gradients averaged over processes afterwards
    (DDP), the parameter gradients equal those of one process computing the loss on the whole global batch.
    """
    if not is_distributed():
        return tensor
    return _GatherWithGrad.apply(tensor)


@torch.no_grad()
def average_gradients(parameters: Iterable[nn.Parameter]) -> None:
    """All-reduce and average the gradients of ``parameters`` (those outside the DDP-wrapped model)."""
    if not is_distributed():
        return
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= dist.get_world_size()
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


@torch.no_grad()
def broadcast_module(module: nn.Module, src: int = 0) -> None:
    """Copy the parameters and buffers of ``module`` on process ``src`` to every process."""
    if not is_distributed():
        return
    for tensor in list(module.parameters()) + list(module.buffers()):
        dist.broadcast(tensor.data, src=src)
