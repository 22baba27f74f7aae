#!/usr/bin/env python
"""CIFAR-100 RKD recipe: CE + RKD on the penultimate embeddings (distance 25, angle 50).

    accelerate launch recipes/cifar100_rkd.py --config recipes/configs/resnet32x4_resnet8x4_rkd.yaml
    python recipes/cifar100_rkd.py --student_model resnet8x4 --teacher_model_name_or_path outputs/teachers/resnet32x4

Run with ``--help`` for every argument.
"""

from hf_relkd.recipe import cli

if __name__ == "__main__":
    cli("rkd")
