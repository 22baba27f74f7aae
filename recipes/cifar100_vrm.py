#!/usr/bin/env python
"""CIFAR-100 VRM recipe: CE on the real and the RandAugment virtual view + VRM (alpha 128, beta 32).

    accelerate launch recipes/cifar100_vrm.py --config recipes/configs/resnet32x4_resnet8x4_vrm.yaml
    python recipes/cifar100_vrm.py --student_model resnet8x4 --teacher_model_name_or_path outputs/teachers/resnet32x4

Run with ``--help`` for every argument.
"""

from hf_relkd.recipe import cli

if __name__ == "__main__":
    cli("vrm")
