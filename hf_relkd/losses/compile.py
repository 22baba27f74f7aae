"""``torch.compile`` for the losses' functional cores.

At the batch sizes of CIFAR distillation the relational losses are hundreds of small tensor operations: on a GPU
every one is a kernel launch, and the step is bound by launching them, not by the arithmetic. Compiling fuses them
into a few kernels. Each loss module names its pure functional cores in ``compilable_functions`` (class attributes
holding the functions of :mod:`hf_relkd.losses.functional`); :func:`compile_losses` replaces them on the instance by
their compiled versions. Parameters, buffers and the RRD queue stay outside the compiled functions, so state dicts,
checkpoints and data parallelism are unchanged.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["check_loss_compile_mode", "compile_losses", "LOSS_COMPILE_MODES"]

# CUDA-graph modes ("reduce-overhead", "max-autotune") are excluded: a graph replay overwrites its previous outputs,
# and the trainer keeps each step's loss terms for logging
LOSS_COMPILE_MODES = (None, "default", "max-autotune-no-cudagraphs")


def check_loss_compile_mode(mode: str | None, argument: str = "mode") -> None:
    """Raise a ``ValueError`` naming ``argument`` unless ``mode`` is one of :data:`LOSS_COMPILE_MODES`."""
    if mode not in LOSS_COMPILE_MODES:
        raise ValueError(
            f"`{argument}` must be one of {LOSS_COMPILE_MODES}, got {mode!r}: the CUDA-graph modes overwrite the "
            "loss terms a step keeps for logging; use 'default'."
        )


def compile_losses(
    module: nn.Module, backend: str = "inductor", mode: str | None = None, **options: Any
) -> int:
    """Compile, in place, the functional core of every loss module in ``module`` (itself included).

    Calling it again is a no-op for what is already compiled.

    Args:
        module: a loss module (:class:`~hf_relkd.KDLoss`, :class:`~hf_relkd.RKDLoss`, :class:`~hf_relkd.RRDLoss`,
            :class:`~hf_relkd.VRMLoss`) or any module containing some, e.g. the trainer's ``distillation_methods``.
        backend: ``torch.compile`` backend.
        mode: ``torch.compile`` mode, one of :data:`LOSS_COMPILE_MODES`.
        **options: further keyword arguments of ``torch.compile`` (``dynamic``, ``fullgraph``, ``options``).

    Returns:
        The number of functions compiled by this call.
    """
    check_loss_compile_mode(mode)
    compiled = 0
    for sub in module.modules():
        for name in getattr(sub, "compilable_functions", ()):
            function = getattr(sub, name)
            if hasattr(function, "_torchdynamo_orig_callable"):  # already compiled
                continue
            setattr(sub, name, torch.compile(function, backend=backend, mode=mode, **options))
            compiled += 1
    return compiled
