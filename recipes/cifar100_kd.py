#!/usr/bin/env python
"""CIFAR-100 Hinton-KD baseline recipe: 0.1 x CE + 0.9 x KD (T = 4), RepDistiller's ``-r 0.1 -a 0.9``.

    accelerate launch recipes/cifar100_kd.py --config recipes/configs/resnet32x4_resnet8x4_kd.yaml
    python recipes/cifar100_kd.py --student_model resnet8x4 --teacher_model_name_or_path outputs/teachers/resnet32x4

Run with ``--help`` for every argument.
"""

from hf_relkd.recipe import cli

if __name__ == "__main__":
    cli("kd")
