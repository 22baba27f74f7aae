"""Distillation losses: functional forms in :mod:`hf_relkd.losses.functional`, ``nn.Module`` wrappers here."""

from . import functional
from .compile import LOSS_COMPILE_MODES, compile_losses
from .kd import KDLoss
from .memory import FIFOQueue
from .rkd import RKDLoss
from .rrd import RRDLoss
from .vrm import LogitAdaptor, VRMLoss

__all__ = [
    "compile_losses",
    "functional",
    "LOSS_COMPILE_MODES",
    "FIFOQueue",
    "KDLoss",
    "LogitAdaptor",
    "RKDLoss",
    "RRDLoss",
    "VRMLoss",
]
