"""Train tiny configurations with ``RelationalDistillationTrainer`` and dump what the tests compare.

Run it under ``torchrun`` (one dump per process) or import it and call :func:`run` in a single process::

    torchrun --standalone --nproc_per_node 2 tests/distributed/train_and_dump.py INIT_FILE OUT_DIR CONFIG [CONFIG ...]

The runs are on the CPU (gloo) unless ``HF_RELKD_TEST_DEVICE=cuda``: then every process trains on a GPU, over NCCL
when there is one GPU per process, otherwise over gloo with all processes sharing GPU 0 (NCCL refuses two processes
on one GPU), so that one GPU suffices to check the multi-process CUDA path. TF32 is off and cuDNN deterministic on
CUDA, because the tests compare processes bit for bit and against one process at float32 tolerance.

``INIT_FILE`` holds the initial student and teacher state dicts (written once by the test, so every run starts from
bit-identical weights). Each configuration trains on the same data with the same *global* batch
(:data:`GLOBAL_BATCH` samples per optimizer step, however many processes and micro-batches), evaluates on an eval set
whose size is not a multiple of the global eval batch, and writes ``OUT_DIR/<config>/rank<r>.pt`` with the student,
teacher and distillation-method state dicts, the log history, the eval metrics and a few structural checks.
"""

from __future__ import annotations

import copy
import os
import sys

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/, for helpers

from helpers import TinyConvNet, tensor_dataset  # noqa: E402

from hf_relkd import RelationalDistillationConfig, RelationalDistillationTrainer  # noqa: E402

DEVICE = os.environ.get("HF_RELKD_TEST_DEVICE", "cpu")
if DEVICE not in ("cpu", "cuda"):
    raise ValueError(f"HF_RELKD_TEST_DEVICE must be 'cpu' or 'cuda', got {DEVICE!r}")
if DEVICE == "cuda":
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False

GLOBAL_BATCH = 8
TRAIN_SIZE = 32  # 4 optimizer steps per epoch
EVAL_SIZE = 13  # not a multiple of 2 processes x 4 samples: the last eval batch is padded under DDP
EVAL_BATCH = 4  # per process
STUDENT_WIDTH, TEACHER_WIDTH = 8, 16

# name -> settings. `accumulation` is the number of micro-batches per optimizer step; the per-process batch is
# GLOBAL_BATCH / (processes x accumulation). Under one process the relation scope makes no difference.
CONFIGS: dict[str, dict] = {
    "rrd_kd_local": dict(methods=["rrd", "kd"], relation_scope="local"),
    "rrd_kd_global": dict(methods=["rrd", "kd"], relation_scope="global"),
    "rkd_local": dict(methods=["rkd"], relation_scope="local"),
    "rkd_global": dict(methods=["rkd"], relation_scope="global"),
    "vrm_local": dict(
        methods=["vrm"], relation_scope="local", vrm_adaptor=True, max_grad_norm=1.0, learning_rate=0.02
    ),
    "vrm_global": dict(
        methods=["vrm"], relation_scope="global", vrm_adaptor=True, max_grad_norm=1.0, learning_rate=0.02
    ),
    # the student runs once per view (two forward passes of the DDP-wrapped student before one backward pass); the
    # students are BatchNorm-free, so this equals "vrm_global"'s single-process reference
    "vrm_per_view_global": dict(
        methods=["vrm"],
        relation_scope="global",
        vrm_adaptor=True,
        max_grad_norm=1.0,
        learning_rate=0.02,
        vrm_student_views="per_view",
    ),
    # CE + KD, the teacher in bfloat16 (broadcast from process 0)
    "kd": dict(methods=["kd"], teacher_dtype="bfloat16"),
    # the same in 2 micro-batches per step, and the teacher handed to processes other than 0 is perturbed (the
    # trainer must broadcast process 0's)
    "kd_accumulation": dict(
        methods=["kd"], teacher_dtype="bfloat16", accumulation=2, perturb_teacher_off_rank0=True
    ),
    # single-process references for "local" RKD/VRM: one process, 2 micro-batches of GLOBAL_BATCH / 2
    "rkd_accumulation": dict(methods=["rkd"], accumulation=2),
    "vrm_accumulation": dict(
        methods=["vrm"], accumulation=2, vrm_adaptor=True, max_grad_norm=1.0, learning_rate=0.02
    ),
    # 6 steps with a checkpoint at step 3, then a fresh trainer resumed from it
    "resume": dict(methods=["rrd", "kd"], max_steps=6, resume=True),
}


class RecordingTrainer(RelationalDistillationTrainer):
    """Keeps this process's own averages of the recorded training metrics before ``log`` reduces them."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.local_means: list[dict[str, float]] = []

    def log(self, logs, start_time=None):
        if self.model.training and self._metrics["train"]:
            self.local_means.append(
                {
                    name: sum(float(v) for v in values) / len(values)  # device tensors and host numbers
                    for name, values in self._metrics["train"].items()
                }
            )
        super().log(logs, start_time)


def make_init_file(path: str, seed: int = 0) -> None:
    """The initial weights every run starts from: a random student and a teacher trained for a few steps."""
    from helpers import trained_teacher

    torch.manual_seed(seed)
    student = TinyConvNet(STUDENT_WIDTH)
    teacher = trained_teacher(TEACHER_WIDTH, steps=60, seed=seed)
    torch.save({"student": student.state_dict(), "teacher": teacher.state_dict()}, path)


def ddp_backend(world: int) -> str | None:
    """The process-group backend the runs use with ``world`` processes (``None`` for one process)."""
    if world == 1:
        return None
    return "nccl" if DEVICE == "cuda" and not share_one_gpu(world) else "gloo"


def share_one_gpu(world: int) -> bool:
    """True when the processes of a CUDA launch outnumber the GPUs and must all use GPU 0."""
    return DEVICE == "cuda" and world > 1 and torch.cuda.device_count() < world


def _rank_and_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def _build(init: dict, name: str, rank: int) -> tuple[nn.Module, nn.Module]:
    student, teacher = TinyConvNet(STUDENT_WIDTH), TinyConvNet(TEACHER_WIDTH)
    student.load_state_dict(init["student"])
    teacher.load_state_dict(init["teacher"])
    if CONFIGS[name].get("perturb_teacher_off_rank0") and rank != 0:
        with torch.no_grad():
            for p in teacher.parameters():
                p.add_(0.1 * torch.randn_like(p))
    return student, teacher


def _config(name: str, output_dir: str, world: int, **overrides) -> RelationalDistillationConfig:
    settings = {
        k: v
        for k, v in CONFIGS[name].items()
        if k not in ("accumulation", "perturb_teacher_off_rank0", "resume")
    }
    accumulation = CONFIGS[name].get("accumulation", 1)
    per_device = GLOBAL_BATCH // (world * accumulation)
    assert per_device * world * accumulation == GLOBAL_BATCH, (name, world)
    kwargs = dict(
        output_dir=output_dir,
        per_device_train_batch_size=per_device,
        gradient_accumulation_steps=accumulation,
        per_device_eval_batch_size=EVAL_BATCH,
        max_steps=4,
        optim="sgd",
        learning_rate=0.1,
        lr_scheduler_type="constant",
        max_grad_norm=0.0,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=DEVICE == "cpu",
        ddp_backend=ddp_backend(world),
        seed=0,
        rrd_queue_size=20,  # smaller than the 4 x 8 enqueued keys: the ring wraps around
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    kwargs.update(settings)
    kwargs.update(overrides)
    return RelationalDistillationConfig(**kwargs)


def _state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


def _train(name: str, init: dict, output_dir: str, rank: int, world: int, resume_from=None, **overrides):
    student, teacher = _build(init, name, rank)
    teacher_modes: list[bool] = []
    teacher.register_forward_hook(lambda module, args, out: teacher_modes.append(module.training))
    trainer = RecordingTrainer(
        model=student,
        teacher_model=teacher,
        args=_config(name, output_dir, world, **overrides),
        train_dataset=tensor_dataset(TRAIN_SIZE, seed=1),
        eval_dataset=tensor_dataset(EVAL_SIZE, seed=2),
    )
    trainer.methods_before_training = _state(trainer.distillation_methods)
    trainer.train(resume_from_checkpoint=resume_from)
    return trainer, teacher, teacher_modes


def _dump(trainer, teacher: nn.Module, teacher_modes: list[bool], path: str, world: int) -> None:
    teacher_after_train = trainer.teacher.training
    metrics = trainer.evaluate()
    optimised = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    student = trainer.accelerator.unwrap_model(trainer.model_wrapped)
    student_buffers = {id(b) for b in trainer.model_wrapped.buffers()}
    record = {
        "world_size": world,
        "distributed_type": str(trainer.accelerator.distributed_type),
        "backend": dist.get_backend() if dist.is_initialized() else None,
        "device": next(student.parameters()).device.type,
        "student_is_ddp": isinstance(trainer.model_wrapped, DistributedDataParallel),
        "teacher_is_ddp": isinstance(trainer.teacher, DistributedDataParallel),
        "teacher_is_the_given_module": trainer.accelerator.unwrap_model(trainer.teacher) is teacher,
        "teacher_params_in_optimizer": sum(id(p) in optimised for p in teacher.parameters()),
        "teacher_requires_grad": any(p.requires_grad for p in teacher.parameters()),
        "distillation_params_in_optimizer": all(
            id(p) in optimised for p in trainer.distillation_parameters()
        ),
        "distillation_buffers_in_student": sum(
            id(b) in student_buffers for b in trainer.distillation_methods.buffers()
        ),
        "teacher_training_modes": teacher_modes,
        "teacher_training_after_train": teacher_after_train,
        "teacher_training_after_evaluate": trainer.teacher.training,
        "student": _state(student),
        "teacher": _state(teacher),
        "methods": _state(trainer.distillation_methods),
        "methods_before_training": trainer.methods_before_training,
        "log_history": copy.deepcopy(trainer.state.log_history),
        "local_means": trainer.local_means,
        "eval": metrics,
        "global_step": trainer.state.global_step,
    }
    os.makedirs(os.path.dirname(path), exist_ok=True)
    torch.save(record, path)


def run(name: str, init_file: str, out_dir: str) -> None:
    """Train configuration ``name`` in this process (one of the processes of a launch, or alone) and dump."""
    rank, world = _rank_and_world()
    init = torch.load(init_file, weights_only=True)
    folder = os.path.join(out_dir, name)
    trainer, teacher, modes = _train(
        name,
        init,
        os.path.join(folder, "out"),
        rank,
        world,
        **(dict(save_strategy="steps", save_steps=3) if CONFIGS[name].get("resume") else {}),
    )
    _dump(trainer, teacher, modes, os.path.join(folder, f"rank{rank}.pt"), world)
    if CONFIGS[name].get("resume"):
        checkpoint = os.path.join(folder, "out", "checkpoint-3")
        path = os.path.join(folder, f"resumed_rank{rank}.pt")
        try:
            trainer, teacher, modes = _train(
                name, init, os.path.join(folder, "resumed_out"), rank, world, resume_from=checkpoint
            )
        except Exception as err:  # recorded for the test to report (every process fails at the same point)
            torch.save({"error": f"{type(err).__name__}: {err}"}, path)
            return
        _dump(trainer, teacher, modes, path, world)


def main(argv: list[str]) -> None:
    init_file, out_dir, *names = argv
    if share_one_gpu(_rank_and_world()[1]):
        # read by accelerate when the arguments pick the device: cuda:0 for every process
        os.environ["LOCAL_RANK"] = "0"
    for name in names or list(CONFIGS):
        run(name, init_file, out_dir)
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1:])
