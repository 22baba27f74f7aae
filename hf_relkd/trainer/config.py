"""``RelationalDistillationConfig``: ``TrainingArguments`` plus every distillation setting."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from transformers import TrainingArguments

from ..losses.compile import check_loss_compile_mode

logger = logging.getLogger(__name__)

KNOWN_METHODS = ("kd", "rkd", "rrd", "vrm")

# Paper defaults applied to a method's weights when it is listed in `methods` and its weights are left unset.
METHOD_DEFAULT_WEIGHTS: dict[str, dict[str, float]] = {
    "kd": {"kd_weight": 1.0},
    "rkd": {"rkd_distance_weight": 25.0, "rkd_angle_weight": 50.0},
    "rrd": {"rrd_weight": 1.0},
    "vrm": {"vrm_inter_sample_weight": 128.0, "vrm_inter_class_weight": 32.0},
}
_WEIGHT_FIELDS = [name for weights in METHOD_DEFAULT_WEIGHTS.values() for name in weights]


#: The ``TrainingArguments`` field that turns activation checkpointing on: ``activation_checkpointing`` since
#: transformers 5, ``gradient_checkpointing`` in 4.x.
ACTIVATION_CHECKPOINTING_FIELD = (
    "activation_checkpointing"
    if "activation_checkpointing" in TrainingArguments.__dataclass_fields__
    else "gradient_checkpointing"
)


@dataclass
class RelationalDistillationConfig(TrainingArguments):
    r"""Configuration of :class:`~hf_relkd.RelationalDistillationTrainer`.

    Every field of ``transformers.TrainingArguments`` is available; the fields below control distillation. Each has
    ``metadata["help"]``, so ``HfArgumentParser`` exposes them as ``--field value``.

    Switching methods on: list them in ``methods`` (``["rrd", "kd"]`` by default); a listed method whose weights are
    left at ``None`` gets its paper defaults (KD 1, RKD 25/50, RRD 1, VRM 128/32). A weight set explicitly always wins:
    ``kd_weight=0.5`` turns KD on with weight 0.5 even if ``"kd"`` is not listed, ``rrd_weight=0`` turns RRD off even
    if listed. After ``__post_init__`` every weight is a float and ``enabled_methods`` lists what will run.

    Parameters that control the loss:
        ce_weight: weight of the cross-entropy with the labels.
        kd_weight, kd_temperature: Hinton KD.
        rkd_distance_weight, rkd_angle_weight: RKD (on penultimate embeddings).
        rrd_weight, rrd_student_temperature, rrd_teacher_temperature, rrd_queue_size, rrd_embed_dim,
        rrd_enqueue_before_loss: RRD (on penultimate embeddings).
        vrm_inter_sample_weight, vrm_inter_class_weight, vrm_prune_percentile, vrm_zsnorm, vrm_adaptor,
        vrm_virtual_ce, vrm_student_views: VRM (on logits of the real and the virtual view).

    Parameters that control the models:
        teacher_model_name_or_path: Hub id or local folder of the teacher, when none is passed to the trainer.
        student_feature_module, teacher_feature_module: module whose input is the penultimate embedding.
        teacher_dtype: run the teacher in this dtype.
        teacher_compile, teacher_compile_backend, teacher_compile_mode: ``torch.compile`` the teacher.
        loss_compile, loss_compile_mode: ``torch.compile`` the losses' functional cores.
        relation_scope: ``"local"`` or ``"global"`` relations under data parallelism.
    """

    # --- which methods -----------------------------------------------------------------------------------------------
    methods: list[str] = field(
        default_factory=lambda: ["rrd", "kd"],
        metadata={
            "help": "Methods to switch on with their paper defaults, any of kd, rkd, rrd, vrm. An explicitly set weight "
            "overrides this list (a positive weight switches its method on, zero switches it off)."
        },
    )
    # --- cross-entropy and KD ----------------------------------------------------------------------------------------
    ce_weight: float = field(
        default=1.0, metadata={"help": "Weight of the cross-entropy with the labels (>= 0)."}
    )
    kd_weight: float | None = field(
        default=None,
        metadata={"help": "Weight of Hinton KD (>= 0). Default: 1 if 'kd' is in methods, else 0."},
    )
    kd_temperature: float = field(default=4.0, metadata={"help": "KD softening temperature (> 0)."})
    # --- RKD ---------------------------------------------------------------------------------------------------------
    rkd_distance_weight: float | None = field(
        default=None,
        metadata={"help": "Weight of RKD's distance term (>= 0). Default: 25 if 'rkd' in methods, else 0."},
    )
    rkd_angle_weight: float | None = field(
        default=None,
        metadata={"help": "Weight of RKD's angle term (>= 0). Default: 50 if 'rkd' in methods, else 0."},
    )
    # --- RRD ---------------------------------------------------------------------------------------------------------
    rrd_weight: float | None = field(
        default=None, metadata={"help": "Weight of RRD (>= 0). Default: 1 if 'rrd' in methods, else 0."}
    )
    rrd_student_temperature: float = field(
        default=0.04,
        metadata={"help": "RRD student temperature tau_s (> 0); 0.04 in the paper, 0.1 in the 2025 code."},
    )
    rrd_teacher_temperature: float = field(
        default=0.1,
        metadata={"help": "RRD teacher temperature tau_t (> 0); 0.1 in the paper, 0.02 in the 2025 code."},
    )
    rrd_queue_size: int = field(
        default=16384, metadata={"help": "Number of teacher keys in the RRD queue (>= 1)."}
    )
    rrd_embed_dim: int = field(default=128, metadata={"help": "Width of the RRD projection heads (>= 1)."})
    rrd_enqueue_before_loss: bool = field(
        default=False,
        metadata={
            "help": "Enqueue the batch's teacher keys before computing RRD (the authors' 2025 code) instead of after "
            "(the paper, MoCo order)."
        },
    )
    # --- VRM ---------------------------------------------------------------------------------------------------------
    vrm_inter_sample_weight: float | None = field(
        default=None,
        metadata={"help": "VRM inter-sample weight alpha (>= 0). Default: 128 if 'vrm' in methods, else 0."},
    )
    vrm_inter_class_weight: float | None = field(
        default=None,
        metadata={"help": "VRM inter-class weight beta (>= 0). Default: 32 if 'vrm' in methods, else 0."},
    )
    vrm_prune_percentile: float = field(
        default=90.0,
        metadata={
            "help": "Inter-sample edges whose joint student entropy is above this percentile of the batch are pruned; "
            "in (0, 100], 100 disables pruning."
        },
    )
    vrm_zsnorm: bool = field(default=True, metadata={"help": "Z-score logits before building VRM relations."})
    vrm_adaptor: bool = field(
        default=False, metadata={"help": "Train a residual MLP logit adaptor on the student side of VRM."}
    )
    vrm_virtual_ce: bool = field(
        default=True,
        metadata={
            "help": "With VRM, apply the cross-entropy to the virtual view too (mean over both views)."
        },
    )
    vrm_student_views: str = field(
        default="joint",
        metadata={
            "help": "With VRM, how the student sees the two views. 'joint': one forward pass over both (2B images; "
            "BatchNorm statistics span both views). 'per_view': one forward pass per view (BatchNorm statistics "
            "per view, as multi-view distillers run their student). The teacher always sees both in one pass (in "
            "eval mode that changes nothing)."
        },
    )
    # --- models ------------------------------------------------------------------------------------------------------
    teacher_model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "Hub id or local folder of the teacher, used when no teacher model is passed to the trainer."
        },
    )
    student_feature_module: str | None = field(
        default=None,
        metadata={
            "help": "Dotted name of the student module whose input is the penultimate embedding (default: the "
            "classifier, found automatically)."
        },
    )
    teacher_feature_module: str | None = field(
        default=None, metadata={"help": "Same as student_feature_module, for the teacher."}
    )
    teacher_dtype: str | None = field(
        default=None,
        metadata={
            "help": "Cast the frozen teacher to this dtype (float32, bfloat16, float16); default: keep its dtype. "
            "Relational math always runs in float32."
        },
    )
    teacher_compile: bool = field(
        default=False,
        metadata={
            "help": "torch.compile the teacher's forward (it runs without gradients and is pure overhead), independently "
            "of the student (`torch_compile`). Pays off on GPUs for runs longer than the compilation."
        },
    )
    teacher_compile_backend: str = field(
        default="inductor", metadata={"help": "torch.compile backend for the teacher (with teacher_compile)."}
    )
    teacher_compile_mode: str | None = field(
        default=None,
        metadata={
            "help": "torch.compile mode for the teacher (with teacher_compile): None, 'default', 'reduce-overhead', "
            "'max-autotune' or 'max-autotune-no-cudagraphs'."
        },
    )
    loss_compile: bool = field(
        default=False,
        metadata={
            "help": "torch.compile the distillation losses (their functional cores; heads and the RRD queue stay "
            "eager). At CIFAR batch sizes a GPU step is bound by launching the losses' many small kernels; "
            "compiling fuses them (backend: `teacher_compile_backend`)."
        },
    )
    loss_compile_mode: str | None = field(
        default=None,
        metadata={
            "help": "torch.compile mode for the losses (with loss_compile): None, 'default' or "
            "'max-autotune-no-cudagraphs' (the CUDA-graph modes would overwrite the logged loss terms)."
        },
    )
    relation_scope: str = field(
        default="local",
        metadata={
            "help": "'local': relations within each process's batch (cheap). 'global': features and logits are "
            "gathered with gradient so RKD/RRD/VRM relations span the global batch."
        },
    )
    eval_teacher: bool = field(
        default=True,
        metadata={
            "help": "Run the teacher during evaluation to report teacher accuracy and teacher agreement."
        },
    )
    # --- schedule ------------------------------------------------------------------------------------------------------
    lr_decay_epochs: list[float] | None = field(
        default=None,
        metadata={
            "help": "Multi-step schedule of the CIFAR-100 benchmark: multiply the learning rate by lr_decay_rate at "
            "each of these epochs (e.g. 150 180 210 of 240). Converted to optimizer steps; overrides lr_scheduler_type."
        },
    )
    lr_decay_rate: float = field(
        default=0.1, metadata={"help": "Factor of each multi-step decay (in (0, 1])."}
    )
    # --- TrainingArguments defaults that distillation needs ------------------------------------------------------------
    remove_unused_columns: bool = field(
        default=False,
        metadata={
            "help": "Kept False: the views transform needs the raw image column, and the student's forward signature "
            "does not list pixel_values_virtual."
        },
    )
    logging_nan_inf_filter: bool = field(
        default=False,
        metadata={
            "help": "transformers' True replaces a NaN/inf step loss by the running average in the logged loss, which "
            "reads every step's loss on the host: two device synchronisations per step, which stall a GPU step bound "
            "by kernel launches. False (here) logs a non-finite loss as it is, which a diverging distillation should "
            "show anyway; training is the same either way."
        },
    )

    def __post_init__(self):
        self._resolve_and_validate_distillation()
        if self.label_names is None:
            # plain nn.Module students have no `labels` argument from which the Trainer could infer this
            self.label_names = ["labels"]
        super().__post_init__()

    # ------------------------------------------------------------------------------------------------------------------
    def _resolve_and_validate_distillation(self) -> None:
        methods = [self.methods] if isinstance(self.methods, str) else list(self.methods or [])
        methods = [m.strip().lower() for entry in methods for m in str(entry).split(",") if m.strip()]
        unknown = sorted(set(methods) - set(KNOWN_METHODS))
        if unknown:
            raise ValueError(
                f"`methods` contains unknown method(s) {unknown}; allowed: {list(KNOWN_METHODS)}."
            )
        self.methods = methods
        for method, defaults in METHOD_DEFAULT_WEIGHTS.items():
            for name, default in defaults.items():
                if getattr(self, name) is None:
                    setattr(self, name, default if method in methods else 0.0)
        for name in ["ce_weight", *_WEIGHT_FIELDS]:
            value = float(getattr(self, name))
            if not value >= 0:  # also rejects NaN
                raise ValueError(f"`{name}` must be >= 0, got {value}.")
            setattr(self, name, value)
        for name in ("kd_temperature", "rrd_student_temperature", "rrd_teacher_temperature"):
            value = getattr(self, name)
            if not value > 0:
                raise ValueError(f"`{name}` must be > 0, got {value}.")
        for name in ("rrd_queue_size", "rrd_embed_dim"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"`{name}` must be an integer >= 1, got {getattr(self, name)}.")
        if not 0 < self.vrm_prune_percentile <= 100:
            raise ValueError(
                f"`vrm_prune_percentile` must be in (0, 100] (100 disables pruning), got {self.vrm_prune_percentile}."
            )
        if self.vrm_student_views not in ("joint", "per_view"):
            raise ValueError(
                f"`vrm_student_views` must be 'joint' or 'per_view', got {self.vrm_student_views!r}."
            )
        if self.relation_scope not in ("local", "global"):
            raise ValueError(f"`relation_scope` must be 'local' or 'global', got {self.relation_scope!r}.")
        if self.teacher_dtype not in (None, "auto", "float32", "bfloat16", "float16"):
            raise ValueError(
                f"`teacher_dtype` must be one of None, 'float32', 'bfloat16', 'float16', got {self.teacher_dtype!r}."
            )
        compile_modes = (None, "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
        if self.teacher_compile_mode not in compile_modes:
            raise ValueError(
                f"`teacher_compile_mode` must be one of {compile_modes}, got {self.teacher_compile_mode!r}."
            )
        check_loss_compile_mode(self.loss_compile_mode, "loss_compile_mode")
        if self.lr_decay_epochs is not None:
            self.lr_decay_epochs = sorted(float(e) for e in self.lr_decay_epochs)
            if any(e <= 0 for e in self.lr_decay_epochs):
                raise ValueError(f"`lr_decay_epochs` must be positive epochs, got {self.lr_decay_epochs}.")
        if not 0 < self.lr_decay_rate <= 1:
            raise ValueError(f"`lr_decay_rate` must be in (0, 1], got {self.lr_decay_rate}.")
        if self.ce_weight == 0 and not self.enabled_methods:
            raise ValueError(
                "Every loss weight is 0: set `ce_weight` > 0 or enable a method with `methods` or a positive weight."
            )

    @property
    def enabled_methods(self) -> list[str]:
        """Names of the distillation methods that will run (positive weights), in a fixed order."""
        enabled = []
        for method, defaults in METHOD_DEFAULT_WEIGHTS.items():
            if any((getattr(self, name) or 0) > 0 for name in defaults):
                enabled.append(method)
        return enabled
