"""Property tests (hypothesis) for ``hf_relkd.losses``: finiteness, dtypes, zeros at equality and invariances.

Inputs cover batch sizes 1..8, widths 1..12 and values from hypothesis' own float choices in ±1e4 (zeros,
subnormals, extremes), seeded Gaussians at scales 1e-3..1e4, ±1e4 sign patterns, constant tensors, all-equal rows and
duplicated rows.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hf_relkd.losses import KDLoss, RKDLoss, RRDLoss, VRMLoss
from hf_relkd.losses.functional import kd_loss, rkd_loss, rrd_loss, vrm_loss

SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FEW = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])

ELEMENTS = st.floats(-1e4, 1e4, allow_nan=False, allow_infinity=False, width=32)
BATCH = st.integers(1, 8)
WIDTH = st.integers(1, 12)
KINDS = ["elements", "gaussian", "extreme", "constant", "equal_rows", "duplicate_rows"]


@st.composite
def matrices(draw, b: int, d: int) -> torch.Tensor:
    """A ``(b, d)`` float32 tensor of one of several kinds (see the module docstring)."""
    kind = draw(st.sampled_from(KINDS))
    if kind == "elements":
        values = draw(st.lists(ELEMENTS, min_size=b * d, max_size=b * d))
        return torch.tensor(values, dtype=torch.float32).reshape(b, d)
    if kind == "constant":
        return torch.full((b, d), draw(ELEMENTS))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    x = torch.randn(b, d, generator=gen)
    if kind == "extreme":
        return torch.where(x >= 0, 1e4, -1e4)
    x = draw(st.sampled_from([1e-3, 1.0, 30.0, 1e4])) * x
    if kind == "equal_rows":
        return x[:1].expand(b, d).clone()
    if kind == "duplicate_rows":
        return x[draw(st.lists(st.integers(0, b - 1), min_size=b, max_size=b))]
    return x


def _finite(x: torch.Tensor) -> bool:
    return bool(torch.isfinite(x).all())


def _leaf(x: torch.Tensor) -> torch.Tensor:
    return x.detach().clone().requires_grad_(True)


def _check_finite_with_grads(
    loss: torch.Tensor, students: list[torch.Tensor], teachers: list[torch.Tensor]
) -> None:
    assert loss.dtype == torch.float32 and loss.dim() == 0
    assert _finite(loss), loss.item()
    loss.backward()
    for x in students:
        assert x.grad is not None and _finite(x.grad), x.grad
    for x in teachers:
        assert x.grad is None


# =====================================================================================================================
# Finite values and gradients; teacher tensors never get a gradient
# =====================================================================================================================
@SETTINGS
@given(data=st.data(), b=BATCH, c=WIDTH, temperature=st.sampled_from([0.5, 1.0, 4.0, 10.0]))
def test_kd_finite_and_teacher_has_no_grad(data, b, c, temperature):
    s, t = _leaf(data.draw(matrices(b, c))), _leaf(data.draw(matrices(b, c)))
    loss = kd_loss(s, t, temperature)
    assert loss.item() >= -1e-4 * max(1.0, temperature**2)  # KL >= 0 up to float32 round-off
    _check_finite_with_grads(loss, [s], [t])
    s2, t2 = _leaf(s), _leaf(t)
    _check_finite_with_grads(KDLoss(temperature)(s2, t2), [s2], [t2])


@SETTINGS
@given(data=st.data(), b=BATCH, ds=WIDTH, dt=WIDTH)
def test_rkd_finite_and_teacher_has_no_grad(data, b, ds, dt):
    s, t = _leaf(data.draw(matrices(b, ds))), _leaf(data.draw(matrices(b, dt)))
    loss = rkd_loss(s, t)
    assert loss.item() >= 0
    _check_finite_with_grads(loss, [s], [t])
    s2, t2 = _leaf(s), _leaf(t)
    terms = RKDLoss().compute_terms(s2, t2)
    assert all(_finite(v) for v in terms.values())
    _check_finite_with_grads(sum(terms.values()), [s2], [t2])


@SETTINGS
@given(
    data=st.data(),
    b=BATCH,
    d=WIDTH,
    k=WIDTH,
    normalize=st.booleans(),
    taus=st.sampled_from([(0.04, 0.1), (0.1, 0.02), (1.0, 1.0)]),
)
def test_rrd_finite_and_teacher_has_no_grad(data, b, d, k, normalize, taus):
    s, t, memory = (data.draw(matrices(n, d)) for n in (b, b, k))
    if normalize:
        s, t, memory = (F.normalize(x, dim=1) for x in (s, t, memory))
    s, t, memory = _leaf(s), _leaf(t), _leaf(memory)
    loss = rrd_loss(s, t, memory, *taus)
    assert loss.item() >= -1e-4  # a cross-entropy
    _check_finite_with_grads(loss, [s], [t, memory])


@FEW
@given(data=st.data(), b=BATCH, ds=WIDTH, dt=WIDTH, k=WIDTH, enqueue_before_loss=st.booleans())
def test_rrd_module_finite_and_teacher_side_has_no_grad(data, b, ds, dt, k, enqueue_before_loss):
    torch.manual_seed(0)
    module = RRDLoss(ds, dt, embed_dim=4, queue_size=k, enqueue_before_loss=enqueue_before_loss)
    fs, ft = _leaf(data.draw(matrices(b, ds))), _leaf(data.draw(matrices(b, dt)))
    _check_finite_with_grads(
        module(fs, ft), [fs, module.student_head.weight], [ft, module.teacher_head.weight]
    )
    assert _finite(module.queue.keys)
    assert int(module.queue.ptr) == min(b, k) % k  # more than k keys at once: the newest k fill the queue


@SETTINGS
@given(
    data=st.data(),
    b=BATCH,
    c=WIDTH,
    prune_percentile=st.one_of(st.sampled_from([100.0, 90.0, 50.0]), st.floats(1.0, 100.0)),
    zsnorm=st.booleans(),
    max_chunk_elements=st.sampled_from([1 << 24, 1, 17]),
)
def test_vrm_finite_and_teacher_has_no_grad(data, b, c, prune_percentile, zsnorm, max_chunk_elements):
    s, s_v, t, t_v = (_leaf(data.draw(matrices(b, c))) for _ in range(4))
    loss = vrm_loss(
        s,
        s_v,
        t,
        t_v,
        prune_percentile=prune_percentile,
        zsnorm=zsnorm,
        max_chunk_elements=max_chunk_elements,
    )
    assert loss.item() >= 0
    _check_finite_with_grads(loss, [s, s_v], [t, t_v])
    module = VRMLoss(
        prune_percentile=prune_percentile,
        zsnorm=zsnorm,
        max_chunk_elements=max_chunk_elements,
        num_classes=c,
        adaptor=True,
    )
    s2, s_v2, t2, t_v2 = (_leaf(x) for x in (s, s_v, t, t_v))
    _check_finite_with_grads(module(s2, s_v2, t2, t_v2), [s2, s_v2, module.adaptor.fc1.weight], [t2, t_v2])
    assert 0 < module.last_kept_fraction <= 1


# =====================================================================================================================
# Half-precision inputs: float32 outputs equal to the result on the upcast values
# =====================================================================================================================
HALF = st.sampled_from([torch.bfloat16, torch.float16])


def _assert_half_matches(fn, tensors: list[torch.Tensor], dtype: torch.dtype) -> None:
    low = [x.to(dtype) for x in tensors]
    out = fn(*low)
    ref = fn(*(x.float() for x in low))
    assert out.dtype == torch.float32
    assert torch.allclose(out, ref, rtol=1e-5, atol=1e-6, equal_nan=False), (out, ref)
    # gradients reach the low-precision student leaf with its dtype
    leaves = [x.detach().clone().requires_grad_(True) for x in low]
    fn(*leaves).backward()
    assert leaves[0].grad is not None and leaves[0].grad.dtype == dtype


@SETTINGS
@given(data=st.data(), b=BATCH, c=WIDTH, dtype=HALF)
def test_kd_half_precision_inputs(data, b, c, dtype):
    _assert_half_matches(kd_loss, [data.draw(matrices(b, c)) for _ in range(2)], dtype)


@SETTINGS
@given(data=st.data(), b=BATCH, ds=WIDTH, dt=WIDTH, dtype=HALF)
def test_rkd_half_precision_inputs(data, b, ds, dt, dtype):
    _assert_half_matches(rkd_loss, [data.draw(matrices(b, ds)), data.draw(matrices(b, dt))], dtype)


@SETTINGS
@given(data=st.data(), b=BATCH, d=WIDTH, k=WIDTH, dtype=HALF)
def test_rrd_half_precision_inputs(data, b, d, k, dtype):
    tensors = [F.normalize(data.draw(matrices(n, d)), dim=1) for n in (b, b, k)]
    _assert_half_matches(rrd_loss, tensors, dtype)


@SETTINGS
@given(data=st.data(), b=BATCH, c=WIDTH, dtype=HALF, prune_percentile=st.sampled_from([100.0, 90.0, 50.0]))
def test_vrm_half_precision_inputs(data, b, c, dtype, prune_percentile):
    tensors = [data.draw(matrices(b, c)) for _ in range(4)]
    _assert_half_matches(lambda *x: vrm_loss(*x, prune_percentile=prune_percentile), tensors, dtype)


# =====================================================================================================================
# Zero at equality
# =====================================================================================================================
@SETTINGS
@given(data=st.data(), b=BATCH, c=WIDTH, temperature=st.sampled_from([0.5, 1.0, 4.0]))
def test_kd_zero_when_student_equals_teacher(data, b, c, temperature):
    s = data.draw(matrices(b, c))
    assert abs(float(kd_loss(s, s.clone(), temperature))) <= 1e-6


@SETTINGS
@given(data=st.data(), b=BATCH, d=WIDTH)
def test_rkd_zero_when_student_equals_teacher(data, b, d):
    s = data.draw(matrices(b, d))
    assert abs(float(rkd_loss(s, s.clone()))) <= 1e-6


@SETTINGS
@given(
    data=st.data(),
    b=BATCH,
    c=WIDTH,
    prune_percentile=st.sampled_from([100.0, 90.0, 50.0]),
    zsnorm=st.booleans(),
)
def test_vrm_zero_when_student_equals_teacher(data, b, c, prune_percentile, zsnorm):
    z, z_v = data.draw(matrices(b, c)), data.draw(matrices(b, c))
    loss = vrm_loss(z, z_v, z.clone(), z_v.clone(), prune_percentile=prune_percentile, zsnorm=zsnorm)
    assert abs(float(loss)) <= 1e-6


def _entropy_f64(logits: torch.Tensor) -> float:
    log_p = torch.log_softmax(logits.double(), dim=1)
    return float(-(log_p.exp() * log_p).sum(dim=1).mean())


@SETTINGS
@given(data=st.data(), b=BATCH, d=WIDTH, k=WIDTH, tau=st.sampled_from([0.02, 0.04, 0.1, 1.0]))
def test_rrd_equal_temperatures_minimum_is_teacher_entropy(data, b, d, k, tau):
    t = F.normalize(data.draw(matrices(b, d)), dim=1)
    memory = F.normalize(data.draw(matrices(k, d)), dim=1)
    entropy = _entropy_f64(t @ memory.t() / tau)
    loss = rrd_loss(t.clone(), t, memory, tau, tau)
    assert math.isclose(float(loss), entropy, rel_tol=1e-4, abs_tol=1e-4), (float(loss), entropy)
    # cross-entropy >= entropy (Gibbs): any other student does no better
    other = F.normalize(data.draw(matrices(b, d)), dim=1)
    assert float(rrd_loss(other, t, memory, tau, tau)) >= entropy - 1e-4


# =====================================================================================================================
# Invariance to a permutation of the batch
# =====================================================================================================================
@st.composite
def separated_points(draw, b: int, d: int) -> torch.Tensor:
    """Distinct points on a jittered integer grid: pairwise distances >= 0.6 and norms <= ~4·sqrt(d).

    Permutation invariance is checked at float32 tolerance; separated points keep every normalised difference well
    conditioned (the direction of a nearly zero difference, and so its cosines, is set by round-off, which a
    different summation order changes).
    """
    rows = draw(
        st.lists(st.tuples(*[st.integers(-4, 4) for _ in range(d)]), min_size=b, max_size=b, unique=True)
    )
    grid = torch.tensor(rows, dtype=torch.float32).reshape(b, d)
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    jitter = (torch.rand(b, d, generator=gen) - 0.5) * (0.4 / math.sqrt(d))
    return grid + jitter


def _close(a: torch.Tensor, b: torch.Tensor, rtol: float = 1e-4, atol: float = 1e-4) -> None:
    assert torch.allclose(a, b, rtol=rtol, atol=atol), (float(a), float(b))


@SETTINGS
@given(data=st.data(), b=BATCH, c=WIDTH, temperature=st.sampled_from([1.0, 4.0]))
def test_kd_batch_permutation_invariance(data, b, c, temperature):
    s, t = data.draw(matrices(b, c)), data.draw(matrices(b, c))
    perm = torch.tensor(data.draw(st.permutations(range(b))))
    _close(kd_loss(s[perm], t[perm], temperature), kd_loss(s, t, temperature), rtol=1e-5)


@SETTINGS
@given(data=st.data(), b=st.integers(1, 7), ds=st.integers(1, 6), dt=st.integers(1, 6))
def test_rkd_batch_permutation_invariance(data, b, ds, dt):
    s, t = data.draw(separated_points(b, ds)), data.draw(separated_points(b, dt))
    perm = torch.tensor(data.draw(st.permutations(range(b))))
    _close(rkd_loss(s[perm], t[perm]), rkd_loss(s, t))


@SETTINGS
@given(data=st.data(), b=BATCH, d=WIDTH, k=WIDTH, taus=st.sampled_from([(0.04, 0.1), (0.1, 0.02)]))
def test_rrd_batch_permutation_invariance(data, b, d, k, taus):
    s, t, memory = (F.normalize(data.draw(matrices(n, d)), dim=1) for n in (b, b, k))
    perm = torch.tensor(data.draw(st.permutations(range(b))))
    _close(rrd_loss(s[perm], t[perm], memory, *taus), rrd_loss(s, t, memory, *taus), rtol=1e-5)
    # and to the order of the memory rows
    mem_perm = torch.tensor(data.draw(st.permutations(range(k))))
    _close(rrd_loss(s, t, memory[mem_perm], *taus), rrd_loss(s, t, memory, *taus), rtol=1e-5)


@SETTINGS
@given(
    data=st.data(),
    b=BATCH,
    c=WIDTH,
    prune_percentile=st.sampled_from([90.0, 50.0, 75.0]),
    zsnorm=st.booleans(),
)
def test_vrm_joint_batch_permutation_invariance_with_pruning(data, b, c, prune_percentile, zsnorm):
    s, s_v, t, t_v = (data.draw(matrices(b, c)) for _ in range(4))
    perm = torch.tensor(data.draw(st.permutations(range(b))))
    permuted = vrm_loss(
        s[perm], s_v[perm], t[perm], t_v[perm], prune_percentile=prune_percentile, zsnorm=zsnorm
    )
    _close(permuted, vrm_loss(s, s_v, t, t_v, prune_percentile=prune_percentile, zsnorm=zsnorm), rtol=1e-5)


# =====================================================================================================================
# RKD: invariance of the student side to similarity transforms
# =====================================================================================================================
@SETTINGS
@given(
    data=st.data(),
    b=st.integers(1, 7),
    ds=st.integers(1, 6),
    dt=st.integers(1, 6),
    scale=st.floats(1e-2, 1e2),
    seed=st.integers(0, 2**31 - 1),
)
def test_rkd_invariant_to_scaling_rotation_translation(data, b, ds, dt, scale, seed):
    s, t = data.draw(separated_points(b, ds)), data.draw(separated_points(b, dt))
    gen = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(ds, ds, generator=gen, dtype=torch.float64))
    q = (q * torch.sign(torch.diagonal(r))).float()  # a Haar-random orthogonal matrix
    assert torch.allclose(q @ q.t(), torch.eye(ds), atol=1e-5)
    shift = 10 * torch.randn(1, ds, generator=gen)
    base = rkd_loss(s, t)
    _close(rkd_loss(scale * s, t), base)
    _close(rkd_loss(s @ q, t), base)
    _close(rkd_loss(s + shift, t), base)
    _close(rkd_loss(scale * (s @ q) + shift, t), base)
    # the teacher side is invariant in the same way
    _close(rkd_loss(s, scale * t - shift[:, :1]), base)


@SETTINGS
@given(data=st.data(), b=st.integers(2, 7), d=st.integers(1, 6))
def test_rkd_gradient_is_orthogonal_to_similarity_directions(data, b, d):
    # invariance to translation and scaling means the gradient sums to zero over the batch and is orthogonal to s
    s, t = data.draw(separated_points(b, d)), data.draw(separated_points(b, d))
    s = _leaf(s)
    rkd_loss(s, t).backward()
    scale = float(s.grad.abs().max()) + 1e-6
    assert torch.allclose(s.grad.sum(dim=0) / scale, torch.zeros(d), atol=1e-4)
    centred = s.detach() - s.detach().mean(dim=0)
    assert abs(float((s.grad * centred).sum())) / (scale * float(centred.abs().sum())) < 1e-4


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_module_outputs_are_float32_for_half_inputs(dtype):
    s, t = torch.randn(4, 6).to(dtype), torch.randn(4, 6).to(dtype)
    assert KDLoss()(s, t).dtype == torch.float32
    assert RKDLoss()(s, t).dtype == torch.float32
    assert VRMLoss()(s, s, t, t).dtype == torch.float32
    assert RRDLoss(6, 6, embed_dim=4, queue_size=8)(s, t).dtype == torch.float32
