"""Functional forms of the distillation losses.

Pure PyTorch: nothing here knows about the Trainer, about models or about data. Every function

* upcasts its inputs to float32 (the relational math is unstable in fp16/bf16: temperatures of 0.02, distances
  clamped at 1e-12, normalised differences of nearly equal vectors),
* treats the teacher side as a constant (no gradient flows into teacher tensors),
* returns a scalar that is finite, with finite gradients, for every finite input, including batches of size 1 or 2,
  duplicate samples and logits of +-1e4.

The formulas, defaults and their provenance are documented in each docstring; see also ``README.md`` ("Methods").
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "kd_loss",
    "rkd_loss",
    "rkd_distance_loss",
    "rkd_angle_loss",
    "rkd_terms",
    "rrd_loss",
    "vrm_loss",
    "vrm_terms",
    "vrm_inter_sample_loss",
    "vrm_inter_class_loss",
    "zscore_normalize",
    "joint_entropy_keep_mask",
]

_PDIST_EPS = 1e-12  # squared-distance clamp of the reference RKD implementations
_NORMALIZE_EPS = 1e-8
_NORMALIZE_EPS_SQ = 1e-24  # (F.normalize's default eps, 1e-12)²: RKD's angle term normalises with it


def _f32(x: Tensor) -> Tensor:
    return x if x.dtype == torch.float32 else x.float()


def _check_batch(name_a: str, a: Tensor, name_b: str, b: Tensor, same_width: bool) -> None:
    if a.dim() != 2 or b.dim() != 2:
        raise ValueError(
            f"`{name_a}` and `{name_b}` must be 2-D (batch, dim) tensors, got shapes {tuple(a.shape)} and {tuple(b.shape)}."
        )
    if a.shape[0] != b.shape[0]:
        raise ValueError(
            f"`{name_a}` and `{name_b}` must have the same batch size, got {a.shape[0]} and {b.shape[0]}."
        )
    if same_width and a.shape[1] != b.shape[1]:
        raise ValueError(
            f"`{name_a}` and `{name_b}` must have the same width, got {a.shape[1]} and {b.shape[1]}."
        )


def _check_vrm_inputs(
    student_logits: Tensor,
    student_logits_virtual: Tensor,
    teacher_logits: Tensor,
    teacher_logits_virtual: Tensor,
) -> None:
    """All four VRM inputs must be ``(B, C)`` with the same ``B`` and ``C`` (edges are compared element-wise, and a
    mismatched teacher of batch or width 1 would otherwise broadcast silently)."""
    for name, x in (
        ("student_logits_virtual", student_logits_virtual),
        ("teacher_logits", teacher_logits),
        ("teacher_logits_virtual", teacher_logits_virtual),
    ):
        _check_batch("student_logits", student_logits, name, x, same_width=True)


# ---------------------------------------------------------------------------------------------------------------------
# Hinton KD
# ---------------------------------------------------------------------------------------------------------------------
def kd_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 4.0) -> Tensor:
    """Hinton knowledge distillation.

    ``T² · KL(softmax(t/T) ‖ softmax(s/T))``, summed over classes and averaged over the batch (RepDistiller's
    ``DistillKL``).

    Args:
        student_logits: ``(B, C)`` student logits.
        teacher_logits: ``(B, C)`` teacher logits (treated as constants).
        temperature: softening temperature ``T > 0``.

    Returns:
        Scalar float32 loss.
    """
    if temperature <= 0:
        raise ValueError(f"`temperature` must be > 0, got {temperature}.")
    _check_batch("student_logits", student_logits, "teacher_logits", teacher_logits, same_width=True)
    s = _f32(student_logits) / temperature
    t = _f32(teacher_logits).detach() / temperature
    log_p_s = F.log_softmax(s, dim=1)
    log_p_t = F.log_softmax(t, dim=1)
    kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(dim=1)
    return kl.mean() * temperature**2


# ---------------------------------------------------------------------------------------------------------------------
# RKD (Park et al., CVPR 2019)
# ---------------------------------------------------------------------------------------------------------------------
def _relation_dtype(device: torch.device) -> torch.dtype:
    """Dtype of the ``(B, B)`` distance matrices: float64 (a ``B²·D`` computation that costs nothing next to the
    networks, and leaves the law of cosines nothing to cancel), float32 on MPS, which has no float64."""
    return torch.float32 if device.type == "mps" else torch.float64


class _SquaredDistances(torch.autograd.Function):
    """``(B, B)`` squared Euclidean distances between the rows of ``x``, from the differences themselves.

    The value comes from ``torch.cdist`` without the Gram-matrix shortcut, so duplicate rows are exactly 0 apart and
    nearly equal rows keep their small distance (the Gram form ``|a|² + |b|² - 2ab`` cancels to round-off noise
    there); no ``(B, B, D)`` tensor is built. Only ``x`` is saved: the gradient ``∂d²_ij/∂x_i = 2 (x_i - x_j)`` is
    applied as ``2 (rowsum(G) x - G x)`` with ``G`` the symmetrised upstream gradient.
    """

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        ctx.save_for_backward(x)
        return torch.cdist(x, x, compute_mode="donot_use_mm_for_euclid_dist").square()

    @staticmethod
    def backward(ctx, grad_output: Tensor) -> Tensor:
        (x,) = ctx.saved_tensors
        g = grad_output + grad_output.t()
        return 2.0 * (g.sum(dim=1, keepdim=True) * x - g @ x)


def _squared_distances(x: Tensor) -> Tensor:
    """Squared distance matrix of the rows of ``x``, in :func:`_relation_dtype` (centred first: distances are
    translation invariant and the backward formula of :class:`_SquaredDistances` cancels less for features far from
    the origin)."""
    x = x.to(_relation_dtype(x.device))
    return _SquaredDistances.apply(x - x.mean(dim=0, keepdim=True))


def _feature_squared_distances(student_features: Tensor, teacher_features: Tensor) -> tuple[Tensor, Tensor]:
    """Validated RKD inputs as squared-distance matrices ``(d2_s, d2_t)``, the teacher's a constant; both RKD terms
    are functions of these alone."""
    _check_batch("student_features", student_features, "teacher_features", teacher_features, same_width=False)
    d2_s = _squared_distances(_f32(student_features).flatten(1))
    with torch.no_grad():
        d2_t = _squared_distances(_f32(teacher_features).flatten(1))
    return d2_s, d2_t


def _pairwise_distances(d2: Tensor) -> Tensor:
    """Float32 Euclidean distance matrix with the reference implementations' clamp: squared distances clamped at
    1e-12 before the square root (finite gradients for duplicate rows), diagonal set to zero."""
    d = d2.clamp(min=_PDIST_EPS).sqrt().float()
    eye = torch.eye(d.shape[0], dtype=torch.bool, device=d.device)
    return d.masked_fill(eye, 0.0)


def _normalised_distances(d2: Tensor) -> Tensor:
    d = _pairwise_distances(d2)
    positive = d > 0
    # mean over off-diagonal, non-degenerate entries; a batch with no such entry (B == 1) keeps d == 0
    mu = (d * positive).sum() / positive.sum().clamp(min=1)
    return d / mu.clamp(min=_PDIST_EPS)


def _inverse_norms(d2: Tensor) -> Tensor:
    """``1 / ‖x_i - x_j‖`` from squared distances; 0 where the difference is exactly zero (``F.normalize`` maps a
    zero vector to zero), as a direction of a zero vector does not exist."""
    return torch.where(d2 > 0, d2.clamp(min=_NORMALIZE_EPS_SQ).rsqrt(), torch.zeros_like(d2))


def _double_dots(d2: Tensor, start: int, stop: int) -> Tensor:
    """``2 <x_i - x_a, x_k - x_a> = d²_ai + d²_ak - d²_ik`` (law of cosines), ``(A, B, B)`` for the anchors
    ``a`` in ``start:stop``."""
    return d2[start:stop, :, None] + d2[start:stop, None, :] - d2[None, :, :]


def _angle_cosines(d2: Tensor, inv: Tensor, start: int, stop: int) -> Tensor:
    """Cosines ``(A, B, B)`` of the angles at the anchors ``start:stop``, in the dtype of ``inv``: the law of cosines
    in the dtype of ``d2`` (float64: no cancellation for nearly equal samples), then one scaled float32 tensor."""
    cos = _double_dots(d2, start, stop).to(inv.dtype)
    return cos.mul_(0.5 * inv[start:stop, :, None]).mul_(inv[start:stop, None, :])


def _cosine_gaps(d2_s: Tensor, inv_s: Tensor, d2_t: Tensor, inv_t: Tensor, start: int, stop: int) -> Tensor:
    """``cos_s - cos_t`` at the anchors ``start:stop``, one new ``(A, B, B)`` tensor."""
    return _angle_cosines(d2_s, inv_s, start, stop).sub_(_angle_cosines(d2_t, inv_t, start, stop))


def _huber_sum_(x: Tensor) -> Tensor:
    """``Σ Huber_δ=1(x)`` with one temporary; ``x`` is overwritten."""
    a = x.abs_()
    m = a.clamp(max=1.0)
    return a.sub_(m).sum() + 0.5 * m.square_().sum()


class _AngleHuberSum(torch.autograd.Function):
    """``Σ_{a,i,k} Huber(cos_s[a,i,k] - cos_t[a,i,k])`` from the student and teacher squared-distance matrices.

    The ``(B, B)`` inputs are float64 (see :func:`_relation_dtype`); the ``(B, B, B)`` cosines are ``dtype``. Forward
    and backward run over chunks of ``chunk`` anchors, and backward recomputes the cosines, so no ``(B, B, B)`` tensor
    outlives its chunk (besides the float64 law-of-cosines one, at most three of chunk size are alive at once) and
    only the two inputs are saved. With ``n = 2 <x_i - x_a, x_k - x_a>`` and ``q_aik = inv_ai · inv_ak / 2`` the
    cosine is ``n · q``; the gradient with respect to ``d2_s`` is written out (everything is symmetric in ``i, k``):

    * ``h = clamp(cos_s - cos_t, -1, 1)`` (Huber, δ=1) and ``A = h · q`` (the gradient with respect to ``n``);
    * through ``n``: ``∂/∂d²_ai = 2 Σ_k A_aik`` and ``∂/∂d²_ik = -Σ_a A_aik``;
    * through ``inv``: ``∂/∂inv_ai = Σ_k h_aik · n_aik · inv_ak``, and ``∂inv/∂d² = -inv³ / 2``.
    """

    @staticmethod
    def forward(ctx, d2_s: Tensor, d2_t: Tensor, chunk: int, dtype: torch.dtype = torch.float32) -> Tensor:
        inv_s, inv_t = _inverse_norms(d2_s).to(dtype), _inverse_norms(d2_t).to(dtype)
        total = inv_s.new_zeros(())
        for start in range(0, d2_s.shape[0], chunk):
            stop = start + chunk
            total += _huber_sum_(_cosine_gaps(d2_s, inv_s, d2_t, inv_t, start, stop))
        ctx.save_for_backward(d2_s, d2_t)
        ctx.chunk, ctx.dtype = chunk, dtype
        return total

    @staticmethod
    def backward(ctx, grad_output: Tensor):
        d2_s, d2_t = ctx.saved_tensors
        inv_exact = _inverse_norms(d2_s)
        inv_s, inv_t = inv_exact.to(ctx.dtype), _inverse_norms(d2_t).to(ctx.dtype)
        grad_d2 = torch.zeros_like(d2_s)
        grad_inv = torch.zeros_like(d2_s)
        for start in range(0, d2_s.shape[0], ctx.chunk):
            stop = start + ctx.chunk
            h = _cosine_gaps(d2_s, inv_s, d2_t, inv_t, start, stop).clamp_(-1.0, 1.0).mul_(grad_output)
            a = (0.5 * inv_s[start:stop, :, None]) * inv_s[start:stop, None, :]
            a.mul_(h)
            grad_d2[start:stop] += 2.0 * a.sum(dim=2)
            grad_d2 -= a.sum(dim=0)
            del a
            h.mul_(_double_dots(d2_s, start, stop).to(h.dtype))
            grad_inv[start:stop] += torch.bmm(h, inv_s[start:stop, :, None]).squeeze(2)
        # d inv / d d² = -inv³ / 2 where inv = d2^(-1/2); zero where inv is constant (d² = 0 or clamped)
        live = d2_s > _NORMALIZE_EPS_SQ
        grad_d2 -= torch.where(live, 0.5 * grad_inv * inv_exact.pow(3), torch.zeros_like(grad_inv))
        return grad_d2, None, None, None


def rkd_distance_loss(student_features: Tensor, teacher_features: Tensor) -> Tensor:
    """RKD distance-wise loss (unweighted): Huber(δ=1) between mean-normalised distance matrices, mean over B×B."""
    return _distance_term(*_feature_squared_distances(student_features, teacher_features))


def _distance_term(d2_s: Tensor, d2_t: Tensor) -> Tensor:
    return F.smooth_l1_loss(_normalised_distances(d2_s), _normalised_distances(d2_t), beta=1.0)


def rkd_angle_loss(
    student_features: Tensor, teacher_features: Tensor, max_chunk_elements: int = 1 << 24
) -> Tensor:
    """RKD angle-wise loss (unweighted): Huber(δ=1) between triplet angle cosines, mean over B×B×B.

    The cosine at vertex ``a`` between ``i`` and ``k`` is the one of the reference implementations
    (``normalize(x_i - x_a) · normalize(x_k - x_a)``, zero when a difference is zero), computed by the law of cosines
    from the exact ``(B, B)`` squared distances: ``O(B²·D + B³)`` work instead of ``O(B³·D)``, and no ``(B, B, D)``
    tensor. The distances and the law of cosines are float64 (float32 on MPS), so nearly equal samples lose nothing to
    cancellation; the cosines are float32. The ``(B, B, B)`` tensors exist for a chunk of anchors at a time (each at
    most ``4 · max_chunk_elements`` bytes, the float64 one included; the default 2**24 keeps a batch of up to 203 in
    one chunk), are recomputed in backward, and only the two ``(B, B)`` distance matrices are saved for it. A zero
    difference gives a zero cosine and no gradient, as its direction does not exist (the reference implementations
    divide it by 1e-12 instead).
    """
    return _angle_term(*_feature_squared_distances(student_features, teacher_features), max_chunk_elements)


def _angle_term(d2_s: Tensor, d2_t: Tensor, max_chunk_elements: int) -> Tensor:
    b = d2_s.shape[0]
    # the float64 law-of-cosines tensor counts as two float32 entries per element
    chunk = max(1, max_chunk_elements // (b * b * d2_s.element_size() // 4))
    return _AngleHuberSum.apply(d2_s, d2_t, chunk) / float(b**3)


def rkd_terms(
    student_features: Tensor,
    teacher_features: Tensor,
    distance_weight: float = 25.0,
    angle_weight: float = 50.0,
    max_chunk_elements: int = 1 << 24,
) -> dict[str, Tensor]:
    """The weighted RKD terms ``{"rkd_distance": λ_D·L_D, "rkd_angle": λ_A·L_A}`` (a zero weight skips its term),
    from one computation of the distance matrices. Arguments as :func:`rkd_loss`."""
    if not (distance_weight or angle_weight):
        return {}
    d2 = _feature_squared_distances(student_features, teacher_features)
    terms = {}
    if distance_weight:
        terms["rkd_distance"] = distance_weight * _distance_term(*d2)
    if angle_weight:
        terms["rkd_angle"] = angle_weight * _angle_term(*d2, max_chunk_elements)
    return terms


def rkd_loss(
    student_features: Tensor,
    teacher_features: Tensor,
    distance_weight: float = 25.0,
    angle_weight: float = 50.0,
    max_chunk_elements: int = 1 << 24,
) -> Tensor:
    """Relational Knowledge Distillation (distance + angle), as RepDistiller / mdistiller ``RKDLoss`` compute it.

    Distance potentials are normalised by the mean off-diagonal distance of the batch (separately for student and
    teacher); angle potentials are the cosines at the middle vertex of every triplet. Both are matched with Huber
    (δ=1), averaged over all B×B and B×B×B entries. Student and teacher widths may differ.

    Args:
        student_features: ``(B, D_s)`` student embeddings (typically the pooled penultimate features).
        teacher_features: ``(B, D_t)`` teacher embeddings (treated as constants).
        distance_weight: weight of the distance term (25 on the CIFAR-100 benchmark).
        angle_weight: weight of the angle term (50 on the CIFAR-100 benchmark).
        max_chunk_elements: largest angle tensor materialised at once (memory bound for large B or D; see
            :func:`rkd_angle_loss`).

    Returns:
        Scalar float32 loss ``distance_weight · L_D + angle_weight · L_A``.
    """
    terms = rkd_terms(student_features, teacher_features, distance_weight, angle_weight, max_chunk_elements)
    return sum(terms.values(), student_features.new_zeros((), dtype=torch.float32))


# ---------------------------------------------------------------------------------------------------------------------
# RRD (Giakoumoglou & Stathaki, 2024)
# ---------------------------------------------------------------------------------------------------------------------
def rrd_loss(
    student_embeddings: Tensor,
    teacher_embeddings: Tensor,
    memory: Tensor,
    student_temperature: float = 0.04,
    teacher_temperature: float = 0.1,
) -> Tensor:
    """Relational Representation Distillation.

    For each sample, the teacher's similarity distribution over the memory of teacher keys,
    ``p_T = softmax(t · Mᵀ / τ_t)``, is the target for the student's ``p_S = softmax(s · Mᵀ / τ_s)``; the loss is the
    batch mean of the cross-entropy ``-Σ_k p_T,k · log p_S,k``.

    Args:
        student_embeddings: ``(B, D)`` projected, L2-normalised student embeddings.
        teacher_embeddings: ``(B, D)`` projected, L2-normalised teacher embeddings (treated as constants).
        memory: ``(K, D)`` teacher keys (the queue; treated as constants).
        student_temperature: ``τ_s`` (0.04 in the RRD paper, 0.1 in the 2025 code).
        teacher_temperature: ``τ_t`` (0.1 in the RRD paper, 0.02 in the 2025 code).

    Returns:
        Scalar float32 loss.
    """
    if student_temperature <= 0 or teacher_temperature <= 0:
        raise ValueError(
            f"RRD temperatures must be > 0, got student_temperature={student_temperature}, "
            f"teacher_temperature={teacher_temperature}."
        )
    _check_batch(
        "student_embeddings", student_embeddings, "teacher_embeddings", teacher_embeddings, same_width=True
    )
    if memory.dim() != 2 or memory.shape[1] != student_embeddings.shape[1]:
        raise ValueError(
            f"`memory` must be (K, {student_embeddings.shape[1]}), got shape {tuple(memory.shape)}."
        )
    mem = _f32(memory).detach()
    with torch.no_grad():  # softmax in the buffer of the similarities: one (B, K) tensor
        p_t = (_f32(teacher_embeddings) @ mem.t()).div_(teacher_temperature)
        p_t = p_t.sub_(p_t.amax(dim=1, keepdim=True)).exp_()
        p_t = p_t.div_(p_t.sum(dim=1, keepdim=True))
    return _RRDCrossEntropy.apply(_f32(student_embeddings), p_t, mem, float(student_temperature))


class _RRDCrossEntropy(torch.autograd.Function):
    """``mean_i -Σ_k p_ik · log_softmax(s_i · Mᵀ / τ)_k`` that holds one ``(B, K)`` tensor besides the target.

    With ``z = s · Mᵀ / τ`` shifted by its row maximum ``m_i`` (``z' = z - m``, as ``log_softmax`` does) and
    ``l_i = log Σ_k exp(z'_ik)``, the loss of row ``i`` is ``l_i · Σ_k p_ik - <p_i, z'_i>`` (the same quantity, as
    ``log_softmax(z)_k = z'_k - l``; the shift keeps both terms small, so nothing cancels) and its gradient with
    respect to ``z_i`` is ``Σ_k p_ik · softmax(z_i) - p_i``. Only ``s``, the target, ``M``, ``m`` and ``l`` are
    saved; ``z`` is recomputed in the backward pass (one ``(B, E) × (E, K)`` product) and turned into its gradient in
    place. Autograd's version of the formula keeps ``z``, ``log_softmax(z)`` and the gradients flowing through them,
    up to four ``(B, K)`` tensors at once, which made RRD the step's memory peak when the networks are small or run
    in bf16. ``M`` must not be modified before the backward pass (autograd checks it).
    """

    @staticmethod
    def forward(ctx, student: Tensor, target: Tensor, memory: Tensor, temperature: float) -> Tensor:
        z = (student @ memory.t()).div_(temperature)
        peak = z.amax(dim=1)
        z.sub_(peak[:, None])
        # row-wise <p_i, z'_i> without a (B, K) product
        dot = torch.bmm(target.unsqueeze(1), z.unsqueeze(2)).view(-1)
        log_norm = z.exp_().sum(dim=1).log_()
        mass = target.sum(dim=1)
        ctx.save_for_backward(student, target, memory, peak, log_norm, mass)
        ctx.temperature = temperature
        return (log_norm * mass - dot).mean()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output: Tensor):
        student, target, memory, peak, log_norm, mass = ctx.saved_tensors
        z = (student @ memory.t()).div_(ctx.temperature)
        grad_z = z.sub_(peak[:, None]).sub_(log_norm[:, None]).exp_().mul_(mass[:, None]).sub_(target)
        grad_z.mul_(grad_output / (z.shape[0] * ctx.temperature))
        return grad_z @ memory, None, None, None


# ---------------------------------------------------------------------------------------------------------------------
# VRM (Zhang et al., ICCV 2025)
# ---------------------------------------------------------------------------------------------------------------------
def zscore_normalize(logits: Tensor, eps: float = 1e-6) -> Tensor:
    """Per-sample z-score of logits ("ZSNorm"): ``(z - mean_c z) / sqrt(var_c z + eps)``.

    ``sqrt(var + eps)`` rather than ``std + eps`` keeps the gradient finite when all logits are equal.
    """
    z = _f32(logits)
    mean = z.mean(dim=1, keepdim=True)
    var = z.var(dim=1, unbiased=False, keepdim=True) if z.shape[1] > 1 else torch.zeros_like(mean)
    return (z - mean) / torch.sqrt(var + eps)


def _entropy(logits: Tensor) -> Tensor:
    log_p = F.log_softmax(_f32(logits), dim=1)
    return -(log_p.exp() * log_p).sum(dim=1)


@torch.no_grad()
def joint_entropy_keep_mask(
    student_logits: Tensor, student_logits_virtual: Tensor, prune_percentile: float
) -> Tensor:
    """Reliable cross-view edges of VRM's inter-sample graph.

    The edge (real ``i``, virtual ``j``) connects the student predictions ``p_i`` and ``p̃_j``; its unreliability is
    their joint entropy ``H(p_i, p̃_j) = H(p_i) + H(p̃_j)`` (the entropy of the product distribution). Edges whose joint
    entropy is above the ``prune_percentile``-th percentile of the batch are dropped.

    Args:
        student_logits: ``(B, C)`` student logits of the real view.
        student_logits_virtual: ``(B, C)`` student logits of the virtual view.
        prune_percentile: in ``(0, 100]``; 100 keeps every edge.

    Returns:
        ``(B, B)`` boolean mask, True for kept edges.
    """
    if not 0 < prune_percentile <= 100:
        raise ValueError(f"`prune_percentile` must be in (0, 100], got {prune_percentile}.")
    b = student_logits.shape[0]
    if prune_percentile >= 100:
        return torch.ones(b, b, dtype=torch.bool, device=student_logits.device)
    joint = _entropy(student_logits)[:, None] + _entropy(student_logits_virtual)[None, :]
    threshold = torch.quantile(joint.flatten(), prune_percentile / 100.0)
    return joint <= threshold


def _unit_edges(a: Tensor, b: Tensor) -> Tensor:
    """``(rows, cols, dim)`` edges ``normalise(a_i - b_j)`` between every row of ``a`` and every row of ``b``."""
    return F.normalize(a[:, None, :] - b[None, :, :], p=2, dim=-1, eps=_NORMALIZE_EPS)


def _edge_huber_sum(a: Tensor, b: Tensor, a_t: Tensor, b_t: Tensor, weight: Tensor | None) -> Tensor:
    """Sum over the edges (i, j) of Huber(normalise(a_i - b_j), normalise(a_t,i - b_t,j)) over the last dimension."""
    e_s, e_t = _unit_edges(a, b), _unit_edges(a_t, b_t)
    per_edge = F.smooth_l1_loss(e_s, e_t, reduction="none", beta=1.0).sum(dim=-1)
    if weight is not None:
        per_edge = per_edge * weight
    return per_edge.sum()


def _chunked_edge_huber_sum(
    a: Tensor, b: Tensor, a_t: Tensor, b_t: Tensor, weight: Tensor | None, max_elements: int
) -> Tensor:
    """:func:`_edge_huber_sum` with at most ``max_elements`` entries of a ``(rows, cols, dim)`` relation tensor built at
    once, in forward and backward alike (see :class:`_EdgeHuberSum`). The value is the same sum."""
    chunk = max(1, max_elements // max(1, b.shape[0] * a.shape[1]))
    return _EdgeHuberSum.apply(a, b, a_t, b_t, weight, chunk)


class _EdgeHuberSum(torch.autograd.Function):
    """``Σ_ij w_ij Σ_k Huber(e_ijk - e'_ijk)`` for the edges ``e_ij = normalize(a_i - b_j)`` of the student and
    ``e'_ij = normalize(a'_i - b'_j)`` of the teacher, built ``chunk`` rows of ``a`` at a time.

    Only the four ``(rows | cols, dim)`` inputs and the weight are saved; backward rebuilds each chunk's edges and
    turns them into their gradient in place, so at most three tensors of chunk size are alive at once and none
    outlives its chunk. Autograd's version keeps the differences, both edge tensors and the Huber input from the
    forward pass until the backward pass, and adds as many temporaries there: VRM's two terms then held about ten
    ``(B, B, C)``-sized tensors at the start of the backward pass, when the networks' activations are all still alive,
    which was VRM's peak with bf16 networks. The gradient, with ``ℓ_ij = ‖a_i - b_j‖``, ``n_ij = max(ℓ_ij, eps)``
    (``F.normalize``'s) and ``h = w · clamp(e - e', -1, 1)`` (Huber, δ=1): the difference ``a_i - b_j`` gets
    ``(h - [ℓ_ij ≥ eps] (h · e_ij) e_ij) / n_ij``, which is summed over ``j`` for ``a_i`` and, negated, over ``i`` for
    ``b_j``. The teacher's inputs get none.
    """

    @staticmethod
    def forward(
        ctx, a: Tensor, b: Tensor, a_t: Tensor, b_t: Tensor, weight: Tensor | None, chunk: int
    ) -> Tensor:
        total = a.new_zeros(())
        for start in range(0, a.shape[0], chunk):
            stop = start + chunk
            w = None if weight is None else weight[start:stop]
            total += _edge_huber_sum(a[start:stop], b, a_t[start:stop], b_t, w)
        ctx.save_for_backward(a, b, a_t, b_t, weight)
        ctx.chunk = chunk
        return total

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output: Tensor):
        a, b, a_t, b_t, weight = ctx.saved_tensors
        need_a, need_b = ctx.needs_input_grad[:2]
        if not (need_a or need_b):
            return None, None, None, None, None, None
        grad_a = torch.zeros_like(a) if need_a else None
        grad_b = torch.zeros_like(b) if need_b else None
        for start in range(0, a.shape[0], ctx.chunk):
            stop = start + ctx.chunk
            e = a[start:stop, None, :] - b[None, :, :]
            length = torch.linalg.vector_norm(e, dim=-1, keepdim=True)
            n = length.clamp_min(_NORMALIZE_EPS)
            e.div_(n)
            h = _unit_edges(a_t[start:stop], b_t)
            h.neg_().add_(e).clamp_(-1.0, 1.0)
            h.mul_(grad_output if weight is None else grad_output * weight[start:stop, :, None])
            projection = (h * e).sum(dim=-1, keepdim=True).mul_(length >= _NORMALIZE_EPS)
            h.sub_(e.mul_(projection)).div_(n)  # the gradient of the chunk's differences a_i - b_j
            del e, projection
            if need_a:
                grad_a[start:stop] += h.sum(dim=1)
            if need_b:
                grad_b -= h.sum(dim=0)
        return grad_a, grad_b, None, None, None, None


def vrm_inter_sample_loss(
    student_logits: Tensor,
    student_logits_virtual: Tensor,
    teacher_logits: Tensor,
    teacher_logits_virtual: Tensor,
    keep: Tensor | None = None,
    max_chunk_elements: int = 1 << 24,
) -> Tensor:
    """VRM inter-sample, cross-view relations (unweighted).

    Edges ``E_ij = (z_i - z̃_j) / ‖z_i - z̃_j‖`` between real sample ``i`` and virtual sample ``j`` (B×B×C), matched
    teacher→student with Huber (δ=1), averaged over the kept edges and the class dimension.
    """
    _check_vrm_inputs(student_logits, student_logits_virtual, teacher_logits, teacher_logits_virtual)
    b = student_logits.shape[0]
    if keep is not None and tuple(keep.shape) != (b, b):
        raise ValueError(f"`keep` must be a ({b}, {b}) mask, got shape {tuple(keep.shape)}.")
    t, t_v = _f32(teacher_logits).detach(), _f32(teacher_logits_virtual).detach()
    s, s_v = _f32(student_logits), _f32(student_logits_virtual)
    weight = None if keep is None else keep.to(s.dtype)
    n_edges = s.new_tensor(float(s.shape[0] * s_v.shape[0])) if keep is None else weight.sum()
    total = _chunked_edge_huber_sum(s, s_v, t, t_v, weight, max_chunk_elements)
    return total / (n_edges.clamp(min=1.0) * s.shape[1])


def vrm_inter_class_loss(
    student_logits: Tensor,
    student_logits_virtual: Tensor,
    teacher_logits: Tensor,
    teacher_logits_virtual: Tensor,
    max_chunk_elements: int = 1 << 24,
) -> Tensor:
    """VRM inter-class, cross-view relations (unweighted).

    Vertices are the class columns ``w_c ∈ R^B`` of the batch logits; edges ``E_cd = (w_c - w̃_d) / ‖w_c - w̃_d‖``
    between the real column of class ``c`` and the virtual column of class ``d`` (C×C×B), matched with Huber (δ=1),
    averaged over all entries. Computed in chunks of classes with recomputation in backward, so ImageNet-sized
    ``C²·B`` tensors are never materialised.
    """
    _check_vrm_inputs(student_logits, student_logits_virtual, teacher_logits, teacher_logits_virtual)
    s, s_v = _f32(student_logits).t(), _f32(student_logits_virtual).t()
    t, t_v = _f32(teacher_logits).detach().t(), _f32(teacher_logits_virtual).detach().t()
    total = _chunked_edge_huber_sum(s, s_v, t, t_v, None, max_chunk_elements)
    return total / float(s.shape[0] * s_v.shape[0] * s.shape[1])


def vrm_terms(
    student_logits: Tensor,
    student_logits_virtual: Tensor,
    teacher_logits: Tensor,
    teacher_logits_virtual: Tensor,
    inter_sample_weight: float = 128.0,
    inter_class_weight: float = 32.0,
    prune_percentile: float = 90.0,
    zsnorm: bool = True,
    max_chunk_elements: int = 1 << 24,
    keep: Tensor | None = None,
) -> dict[str, Tensor]:
    """The weighted VRM terms ``{"vrm_inter_sample": α·L_IS, "vrm_inter_class": β·L_IC}`` (a zero weight skips its
    term). Arguments as :func:`vrm_loss`; ``keep`` is a precomputed ``(B, B)`` edge mask (e.g. from the logits before a
    student adaptor), otherwise it is computed from ``student_logits`` and ``student_logits_virtual``."""
    _check_vrm_inputs(student_logits, student_logits_virtual, teacher_logits, teacher_logits_virtual)
    if not 0 < prune_percentile <= 100:
        raise ValueError(f"`prune_percentile` must be in (0, 100], got {prune_percentile}.")
    if keep is None and prune_percentile < 100:
        keep = joint_entropy_keep_mask(student_logits, student_logits_virtual, prune_percentile)
    logits = (student_logits, student_logits_virtual, teacher_logits, teacher_logits_virtual)
    if zsnorm:
        logits = tuple(zscore_normalize(z) for z in logits)
    terms = {}
    if inter_sample_weight:
        terms["vrm_inter_sample"] = inter_sample_weight * vrm_inter_sample_loss(
            *logits, keep, max_chunk_elements
        )
    if inter_class_weight:
        terms["vrm_inter_class"] = inter_class_weight * vrm_inter_class_loss(*logits, max_chunk_elements)
    return terms


def vrm_loss(
    student_logits: Tensor,
    student_logits_virtual: Tensor,
    teacher_logits: Tensor,
    teacher_logits_virtual: Tensor,
    inter_sample_weight: float = 128.0,
    inter_class_weight: float = 32.0,
    prune_percentile: float = 90.0,
    zsnorm: bool = True,
    max_chunk_elements: int = 1 << 24,
) -> Tensor:
    """Virtual Relation Matching.

    Inter-sample (B×B×C) and inter-class (C×C×B) relations between the real view and the augmented "virtual" view,
    cross-view edges only, matched teacher→student with Huber (δ=1). Inter-sample edges whose joint student entropy is
    above the ``prune_percentile``-th percentile of the batch are pruned (see :func:`joint_entropy_keep_mask`).

    Args:
        student_logits: ``(B, C)`` student logits, real view.
        student_logits_virtual: ``(B, C)`` student logits, virtual view.
        teacher_logits: ``(B, C)`` teacher logits, real view (constants).
        teacher_logits_virtual: ``(B, C)`` teacher logits, virtual view (constants).
        inter_sample_weight: ``α`` (128 in the paper).
        inter_class_weight: ``β`` (32 in the paper).
        prune_percentile: percentile of the batch's joint entropies above which inter-sample edges are dropped, in
            ``(0, 100]``; 100 disables pruning.
        zsnorm: z-score every logit vector before building relations.
        max_chunk_elements: largest edge tensor materialised at once (memory bound for large B or C).

    Returns:
        Scalar float32 loss ``α · L_IS + β · L_IC``.
    """
    terms = vrm_terms(
        student_logits,
        student_logits_virtual,
        teacher_logits,
        teacher_logits_virtual,
        inter_sample_weight,
        inter_class_weight,
        prune_percentile,
        zsnorm,
        max_chunk_elements,
    )
    return sum(terms.values(), student_logits.new_zeros((), dtype=torch.float32))
