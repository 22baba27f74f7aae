#!/usr/bin/env python
"""CIFAR-100 RRD recipe: CE + RRD (weight 1, queue 16384, tau_s 0.04, tau_t 0.1). RRD+KD: add ``--kd_weight 1``
(or use a ``*_rrd_kd.yaml`` config).

    accelerate launch recipes/cifar100_rrd.py --config recipes/configs/resnet32x4_resnet8x4_rrd.yaml
    python recipes/cifar100_rrd.py --student_model resnet8x4 --teacher_model_name_or_path outputs/teachers/resnet32x4 \
        --kd_weight 1

Run with ``--help`` for every argument.
"""

from hf_relkd.recipe import cli

if __name__ == "__main__":
    cli("rrd")
