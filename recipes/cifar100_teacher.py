#!/usr/bin/env python
"""CIFAR-100 teacher recipe: cross-entropy training of a zoo (or timm) model, the paper protocol by default.

It trains with ``hf_relkd.recipe.CrossEntropyTrainer`` -- the stock ``transformers.Trainer`` plus the benchmark's
multi-step schedule -- because there is no teacher to distil from yet. The output folder (model, image processor,
``results.json``) is what the distillation recipes take as ``--teacher_model_name_or_path``.

    python recipes/cifar100_teacher.py --teacher_model resnet32x4 --output_dir outputs/teachers/resnet32x4
    accelerate launch --config_file recipes/accelerate_configs/single_gpu.yaml recipes/cifar100_teacher.py \
        --config recipes/configs/resnet32x4_teacher.yaml

Run with ``--help`` for every argument.
"""

from hf_relkd.recipe import cli

if __name__ == "__main__":
    cli("teacher")
