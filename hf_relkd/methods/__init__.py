"""Distillation methods: the adapters between the trainer and the losses, and their registry."""

from .base import (
    METHOD_REGISTRY,
    DistillationMethod,
    ModelDims,
    StepOutputs,
    build_methods,
    register_method,
    weighted_term,
)
from .kd import KDMethod
from .rkd import RKDMethod
from .rrd import RRDMethod
from .vrm import VRMMethod

__all__ = [
    "METHOD_REGISTRY",
    "DistillationMethod",
    "KDMethod",
    "ModelDims",
    "RKDMethod",
    "RRDMethod",
    "StepOutputs",
    "VRMMethod",
    "build_methods",
    "register_method",
    "weighted_term",
]
