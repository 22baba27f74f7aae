"""Memory of past teacher keys for RRD: a FIFO queue stored as buffers, so ``state_dict`` saves and restores it."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

GatherFn = Callable[[Tensor], Tensor]


class FIFOQueue(nn.Module):
    """A ring buffer of ``size`` L2-normalised keys of width ``dim``.

    Any number of keys can be enqueued at once: writes wrap around the end, so the queue size need not be a multiple
    of the batch size and a smaller last batch is fine. When more than ``size`` keys arrive at once, the last ``size``
    are kept.

    Under data parallelism pass ``gather_fn`` (for example ``accelerator.gather``): keys are gathered from all
    processes before they enter the queue, so every process holds the same queue, equal to the one a single process
    with the global batch would hold.

    The buffers ``ptr`` and ``num_enqueued`` are written by :meth:`enqueue` and read back once: the queue keeps their
    values on the host, so an enqueue never waits for the device. Restore them with ``load_state_dict`` (which
    refreshes the host copy) rather than by writing the buffers in place.

    Args:
        size: number of keys ``K``.
        dim: key width ``D``.
        gather_fn: optional function that concatenates a tensor across processes, in rank order.
    """

    def __init__(self, size: int, dim: int, gather_fn: GatherFn | None = None):
        super().__init__()
        if size < 1:
            raise ValueError(f"The queue size must be >= 1, got {size}.")
        self.size, self.dim = int(size), int(dim)
        self.gather_fn = gather_fn
        self.register_buffer("keys", F.normalize(torch.randn(self.size, self.dim), dim=1))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("num_enqueued", torch.zeros((), dtype=torch.long))
        # host copies of (ptr, num_enqueued): the write position is known without reading the device, so an enqueue
        # is one slice copy (two when it wraps) instead of index arithmetic on the device, and the fill is a Python
        # number. Read from the buffers once (lazily) and again after load_state_dict.
        self._host_position: tuple[int, int] | None = None
        self.register_load_state_dict_post_hook(_forget_host_position)

    def _position(self) -> tuple[int, int]:
        if self._host_position is None:
            self._host_position = (int(self.ptr), int(self.num_enqueued))
        return self._host_position

    def fill_fraction(self) -> Tensor:
        """Fraction of the queue that holds real keys rather than its random initialisation, as a 0-d tensor on the
        queue's device."""
        return self.keys.new_tensor(self.fill)

    @property
    def fill(self) -> float:
        """Fraction of the queue that holds real keys rather than its random initialisation (a Python float; reading
        it does not wait for the device)."""
        return min(1.0, self._position()[1] / self.size)

    @torch.no_grad()
    def enqueue(self, keys: Tensor) -> None:
        """Write ``keys`` (``(n, D)``) at the pointer, wrapping around, after gathering them across processes."""
        keys = keys.detach()
        if self.gather_fn is not None:
            keys = self.gather_fn(keys)
        keys = keys.to(self.keys.dtype)
        if keys.shape[0] > self.size:
            keys = keys[-self.size :]
        n = keys.shape[0]
        ptr, count = self._position()
        head = min(n, self.size - ptr)
        self.keys[ptr : ptr + head].copy_(keys[:head])
        if head < n:  # wrap around to the start
            self.keys[: n - head].copy_(keys[head:])
        ptr, count = (ptr + n) % self.size, count + n
        self.ptr.fill_(ptr)
        self.num_enqueued.fill_(count)
        self._host_position = (ptr, count)

    def extra_repr(self) -> str:
        return f"size={self.size}, dim={self.dim}"


def _forget_host_position(module: FIFOQueue, incompatible_keys) -> None:
    module._host_position = None
