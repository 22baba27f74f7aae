"""Distillation losses: functional forms in :mod:`hf_relkd.losses.functional`, ``nn.Module`` wrappers here."""

from . import functional
from .kd import KDLoss
from .memory import FIFOQueue
from .rkd import RKDLoss
from .rrd import RRDLoss
from .vrm import LogitAdaptor, VRMLoss

__all__ = ["functional", "FIFOQueue", "KDLoss", "LogitAdaptor", "RKDLoss", "RRDLoss", "VRMLoss"]
