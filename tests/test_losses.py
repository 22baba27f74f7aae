"""Golden-value and behaviour tests for ``hf_relkd.losses``.

Every reference below is written independently of the implementation: float64, explicit Python loops over samples,
classes, pairs and triplets, straight from the formulas of the loss docstrings and the methods reference (§1.2 RRD,
§3/§6 VRM, §4 RKD). The implementation runs in float32, hence ``rtol=1e-5`` (looser only where noted).
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from hf_relkd.losses import FIFOQueue, KDLoss, RKDLoss, RRDLoss, VRMLoss
from hf_relkd.losses.functional import (
    _AngleHuberSum,
    _chunked_edge_huber_sum,
    _edge_huber_sum,
    _squared_distances,
    joint_entropy_keep_mask,
    kd_loss,
    rkd_angle_loss,
    rkd_distance_loss,
    rkd_loss,
    rrd_loss,
    vrm_inter_class_loss,
    vrm_inter_sample_loss,
    vrm_loss,
    zscore_normalize,
)

RTOL, ATOL = 1e-5, 1e-7


def _randn(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _close(actual: torch.Tensor, expected: float, rtol: float = RTOL, atol: float = ATOL) -> None:
    assert actual.dtype == torch.float32
    assert actual.dim() == 0
    actual = actual.detach()
    assert math.isclose(float(actual), expected, rel_tol=rtol, abs_tol=atol), (float(actual), expected)


# =====================================================================================================================
# Independent float64 references (loops only)
# =====================================================================================================================
def _rows(x: torch.Tensor) -> list[list[float]]:
    return x.detach().double().tolist()


def _huber(x: float) -> float:
    return 0.5 * x * x if abs(x) <= 1.0 else abs(x) - 0.5


def _log_softmax(row: list[float]) -> list[float]:
    m = max(row)
    lse = m + math.log(sum(math.exp(v - m) for v in row))
    return [v - lse for v in row]


def _unit(v: list[float], eps: float) -> list[float]:
    n = math.sqrt(sum(a * a for a in v))
    return [a / max(n, eps) for a in v]


def ref_kd(s: torch.Tensor, t: torch.Tensor, temperature: float) -> float:
    total = 0.0
    for s_row, t_row in zip(_rows(s), _rows(t)):
        log_ps = _log_softmax([v / temperature for v in s_row])
        log_pt = _log_softmax([v / temperature for v in t_row])
        total += sum(math.exp(lt) * (lt - ls) for lt, ls in zip(log_pt, log_ps))
    return temperature**2 * total / s.shape[0]


def _ref_distance_matrix(x: torch.Tensor) -> list[list[float]]:
    xs = _rows(x)
    n = len(xs)
    d = [[0.0] * n for _ in range(n)]
    for i in range(n):
        for j in range(n):
            if i != j:
                d2 = sum((a - b) ** 2 for a, b in zip(xs[i], xs[j]))
                d[i][j] = math.sqrt(max(d2, 1e-12))
    positive = [d[i][j] for i in range(n) for j in range(n) if d[i][j] > 0]
    mu = sum(positive) / len(positive)
    return [[v / mu for v in row] for row in d]


def _ref_angles(x: torch.Tensor) -> list[float]:
    """cos of the angle at vertex a between b and c, for a, b, c in row-major order (B³ values)."""
    xs = _rows(x)
    n = len(xs)
    out = []
    for a in range(n):
        for b in range(n):
            for c in range(n):
                u = _unit([p - q for p, q in zip(xs[b], xs[a])], 1e-12)
                v = _unit([p - q for p, q in zip(xs[c], xs[a])], 1e-12)
                out.append(sum(p * q for p, q in zip(u, v)))
    return out


def ref_rkd_distance(s: torch.Tensor, t: torch.Tensor) -> float:
    ds, dt = _ref_distance_matrix(s), _ref_distance_matrix(t)
    n = s.shape[0]
    return sum(_huber(ds[i][j] - dt[i][j]) for i in range(n) for j in range(n)) / n**2


def ref_rkd_angle(s: torch.Tensor, t: torch.Tensor) -> float:
    a_s, a_t = _ref_angles(s), _ref_angles(t)
    return sum(_huber(p - q) for p, q in zip(a_s, a_t)) / len(a_s)


def ref_rkd(s: torch.Tensor, t: torch.Tensor, wd: float = 25.0, wa: float = 50.0) -> float:
    return wd * ref_rkd_distance(s, t) + wa * ref_rkd_angle(s, t)


def ref_rrd(s: torch.Tensor, t: torch.Tensor, memory: torch.Tensor, tau_s: float, tau_t: float) -> float:
    mem = _rows(memory)
    total = 0.0
    for s_row, t_row in zip(_rows(s), _rows(t)):
        logits_s = [sum(a * b for a, b in zip(s_row, k)) / tau_s for k in mem]
        logits_t = [sum(a * b for a, b in zip(t_row, k)) / tau_t for k in mem]
        m = max(logits_t)
        e = [math.exp(v - m) for v in logits_t]
        p_t = [v / sum(e) for v in e]
        total -= sum(p * lq for p, lq in zip(p_t, _log_softmax(logits_s)))
    return total / s.shape[0]


def _ref_zscore(rows: list[list[float]]) -> list[list[float]]:
    out = []
    for row in rows:
        mean = sum(row) / len(row)
        var = sum((v - mean) ** 2 for v in row) / len(row)
        out.append([(v - mean) / math.sqrt(var + 1e-6) for v in row])
    return out


def _ref_entropy(row: list[float]) -> float:
    return -sum(math.exp(lp) * lp for lp in _log_softmax(row))


def ref_keep_mask(s: torch.Tensor, s_v: torch.Tensor, percentile: float) -> np.ndarray:
    h = [_ref_entropy(r) for r in _rows(s)]
    h_v = [_ref_entropy(r) for r in _rows(s_v)]
    joint = np.array([[hi + hj for hj in h_v] for hi in h])
    if percentile >= 100:
        return np.ones_like(joint, dtype=bool)
    threshold = np.percentile(joint.ravel(), percentile, method="linear")
    return joint <= threshold


def ref_vrm_terms(s, s_v, t, t_v, prune_percentile=90.0, zsnorm=True) -> tuple[float, float]:
    """Unweighted (L_IS, L_IC)."""
    keep = ref_keep_mask(s, s_v, prune_percentile)  # from RAW student logits
    zs, zs_v, zt, zt_v = (_rows(x) for x in (s, s_v, t, t_v))
    if zsnorm:
        zs, zs_v, zt, zt_v = (_ref_zscore(x) for x in (zs, zs_v, zt, zt_v))
    b, c = len(zs), len(zs[0])
    eps = 1e-8

    # inter-sample: real i vs virtual j, edge in R^C
    is_sum, kept = 0.0, 0
    for i in range(b):
        for j in range(b):
            if not keep[i, j]:
                continue
            kept += 1
            e_s = _unit([zs[i][k] - zs_v[j][k] for k in range(c)], eps)
            e_t = _unit([zt[i][k] - zt_v[j][k] for k in range(c)], eps)
            is_sum += sum(_huber(p - q) for p, q in zip(e_s, e_t))
    l_is = is_sum / (kept * c)

    # inter-class: real column c vs virtual column d, edge in R^B
    ic_sum = 0.0
    for c1 in range(c):
        for d1 in range(c):
            e_s = _unit([zs[i][c1] - zs_v[i][d1] for i in range(b)], eps)
            e_t = _unit([zt[i][c1] - zt_v[i][d1] for i in range(b)], eps)
            ic_sum += sum(_huber(p - q) for p, q in zip(e_s, e_t))
    l_ic = ic_sum / (c * c * b)
    return l_is, l_ic


def ref_vrm(s, s_v, t, t_v, alpha=128.0, beta=32.0, prune_percentile=90.0, zsnorm=True) -> float:
    l_is, l_ic = ref_vrm_terms(s, s_v, t, t_v, prune_percentile, zsnorm)
    return alpha * l_is + beta * l_ic


def _leaf(x: torch.Tensor) -> torch.Tensor:
    return x.detach().clone().requires_grad_(True)


def _vrm_inputs(b: int, c: int, seed: int, scale: float = 3.0):
    return tuple(scale * _randn(b, c, seed=seed + k) for k in range(4))


# =====================================================================================================================
# KD
# =====================================================================================================================
@pytest.mark.parametrize("temperature", [1.0, 4.0, 0.5])
@pytest.mark.parametrize("b,c", [(5, 5), (4, 7), (1, 3)])
def test_kd_matches_reference(b, c, temperature):
    s, t = 3 * _randn(b, c, seed=1), 3 * _randn(b, c, seed=2)
    # float32 KL sums terms of size ~|log p| that cancel down to the (small) divergence: absolute tolerance ~1e-7·T²
    atol = 1e-7 * max(1.0, temperature**2)
    _close(kd_loss(s, t, temperature), ref_kd(s, t, temperature), atol=atol)
    _close(KDLoss(temperature)(s, t), ref_kd(s, t, temperature), atol=atol)


def test_kd_hand_computed_two_classes_and_t_squared_scaling():
    # T=1, teacher logits (ln 3, 0) -> p_t = (3/4, 1/4); student (0, 0) -> p_s = (1/2, 1/2)
    # KL = 3/4 ln(3/2) + 1/4 ln(1/2) = 0.75*0.4054651 - 0.25*0.6931472 = 0.1308120
    s = torch.zeros(1, 2)
    expected = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    assert math.isclose(expected, 0.130812, abs_tol=1e-6)
    _close(kd_loss(s, torch.tensor([[math.log(3.0), 0.0]]), temperature=1.0), expected)
    # T=2 with logits scaled by 2: same softened distributions, so the loss is exactly T² = 4 times larger
    _close(kd_loss(s, torch.tensor([[2 * math.log(3.0), 0.0]]), temperature=2.0), 4 * expected)
    # batch mean: a second, identical-distribution row (zero KL) halves the loss
    s2, t2 = torch.zeros(2, 2), torch.tensor([[math.log(3.0), 0.0], [5.0, 5.0]])
    _close(kd_loss(s2, t2, temperature=1.0), expected / 2)


def test_kd_temperature_squared_scaling_against_reference():
    s, t = _randn(4, 6, seed=3), _randn(4, 6, seed=4)
    for temperature in (1.0, 2.0, 8.0):
        # same softened distributions at every T -> the loss scales as T²
        loss = kd_loss(s * temperature, t * temperature, temperature)
        _close(loss, temperature**2 * ref_kd(s, t, 1.0))


# =====================================================================================================================
# RKD
# =====================================================================================================================
@pytest.mark.parametrize("b,ds,dt", [(5, 3, 3), (6, 7, 4), (4, 3, 7), (3, 5, 5)])
def test_rkd_matches_reference(b, ds, dt):
    s, t = _randn(b, ds, seed=10), 2 * _randn(b, dt, seed=11) + 1
    _close(rkd_distance_loss(s, t), ref_rkd_distance(s, t))
    _close(rkd_angle_loss(s, t), ref_rkd_angle(s, t))
    _close(rkd_loss(s, t), ref_rkd(s, t))
    _close(rkd_loss(s, t, distance_weight=1.0, angle_weight=2.0), ref_rkd(s, t, 1.0, 2.0))
    module = RKDLoss()
    terms = module.compute_terms(s, t)
    assert set(terms) == {"rkd_distance", "rkd_angle"}
    _close(terms["rkd_distance"], 25 * ref_rkd_distance(s, t))
    _close(terms["rkd_angle"], 50 * ref_rkd_angle(s, t))
    _close(module(s, t), ref_rkd(s, t))


def test_rkd_with_duplicate_sample_matches_reference():
    # a duplicated row: its distance is exactly 0, clamped like the reference implementations (sqrt(1e-12) = 1e-6,
    # still > 0 and part of the mean), and its difference vectors are zero, so every angle with it as a side is 0
    s, t = _randn(5, 4, seed=12), _randn(5, 3, seed=13)
    s[3] = s[1]
    _close(rkd_angle_loss(s, t), ref_rkd_angle(s, t))
    _close(rkd_distance_loss(s, t), ref_rkd_distance(s, t))
    _close(rkd_loss(s, t), ref_rkd(s, t))
    s.requires_grad_(True)
    rkd_loss(s, t).backward()
    assert torch.isfinite(s.grad).all()


@pytest.mark.parametrize("gap", [1e-2, 1e-3])
def test_rkd_with_nearly_equal_samples_matches_reference(gap):
    # two rows `gap` apart (about gap/4 of the typical distance), features far from the origin: distances from the
    # differences (not the Gram form |a|² + |b|² - 2ab, which cancels to round-off there) and a float64 law of
    # cosines keep both terms at float32 accuracy
    s, t = 100.0 + _randn(6, 8, seed=40), _randn(6, 8, seed=41)
    s[4] = s[2] + gap * _randn(8, seed=42)
    _close(rkd_distance_loss(s, t), ref_rkd_distance(s, t))
    _close(rkd_angle_loss(s, t), ref_rkd_angle(s, t))


def test_rkd_hand_computed_collinear_points():
    # student on a line at 0, 1, 3: distances 1, 3, 2 (each twice off the diagonal), mean 2 -> 0.5, 1.5, 1.0
    # teacher at 0, 1, 2:          distances 1, 2, 1,                                 mean 4/3 -> 0.75, 1.5, 0.75
    # differences -0.25, 0, 0.25 (twice each) -> Huber 0.03125 on 4 of the 9 entries -> L_D = 0.125 / 9 = 1/72
    # same ordering on the line -> every cosine (±1, or 0 with a repeated vertex) agrees -> L_A = 0
    s = torch.tensor([[0.0], [1.0], [3.0]])
    t = torch.tensor([[0.0], [1.0], [2.0]])
    _close(rkd_distance_loss(s, t), 1 / 72)
    _close(rkd_angle_loss(s, t), 0.0, atol=1e-7)
    _close(rkd_loss(s, t), 25 / 72)


def test_rkd_hand_computed_equilateral_vs_collinear():
    # student: equilateral triangle, all distances equal -> normalised 1; cos = 1 on [a,b,b], 0.5 on [a,b,c]
    # teacher: collinear 0, 1, 2 (as 2-D points) -> normalised 0.75, 1.5, 0.75
    # L_D: diffs 0.25, -0.5, 0.25 twice each -> (4 * 0.03125 + 2 * 0.125) / 9 = 0.375 / 9 = 1/24
    # L_A: teacher cos at vertex 0: [0,1,2] = [0,2,1] = 1; vertex 1: [1,0,2] = [1,2,0] = -1; vertex 2: [2,0,1] = 1;
    #      the [a,b,b] entries (1 = 1) and those with a repeated vertex (0 = 0) agree.
    #      diffs 0.5 (x4, Huber 0.125) and 1.5 (x2, Huber 1.0, linear branch) -> (0.5 + 2.0) / 27 = 2.5 / 27
    s = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.5, math.sqrt(3.0) / 2]])
    t = torch.tensor([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0]])
    _close(rkd_distance_loss(s, t), 1 / 24, atol=1e-6)
    _close(rkd_angle_loss(s, t), 2.5 / 27, atol=1e-6)
    _close(RKDLoss(distance_weight=0.0, angle_weight=1.0)(s, t), 2.5 / 27, atol=1e-6)
    assert set(RKDLoss(distance_weight=0.0, angle_weight=1.0).compute_terms(s, t)) == {"rkd_angle"}
    assert set(RKDLoss(distance_weight=1.0, angle_weight=0.0).compute_terms(s, t)) == {"rkd_distance"}


@pytest.mark.parametrize("max_chunk_elements", [98, 196, 294, 1000])
def test_rkd_angle_chunked_equals_unchunked_value_and_gradient(max_chunk_elements):
    # B=7: one anchor's float64 law-of-cosines slice of 7 * 7 entries counts as 98 float32 entries -> chunks of 1, 2
    # and 3 anchors (7 = 3+3+1) and, with 1000, all 7 in one chunk
    s0, t = _randn(7, 4, seed=30), 3 * _randn(7, 5, seed=31)
    results = []
    for chunk in (1 << 24, max_chunk_elements):
        s = s0.clone().requires_grad_(True)
        loss = rkd_angle_loss(s, t, max_chunk_elements=chunk)
        loss.backward()
        results.append((loss.detach(), s.grad))
    (l_full, g_full), (l_chunk, g_chunk) = results
    assert torch.allclose(l_chunk, l_full, rtol=1e-6, atol=1e-8)
    assert torch.allclose(g_chunk, g_full, rtol=1e-5, atol=1e-8)
    _close(l_chunk, ref_rkd_angle(s0, t))
    with torch.no_grad():  # the forward pass alone
        _close(rkd_angle_loss(s0, t, max_chunk_elements=max_chunk_elements), l_full)
    module = RKDLoss(distance_weight=0.0, angle_weight=1.0, max_chunk_elements=max_chunk_elements)
    _close(module(s0, t), l_full)
    _close(rkd_loss(s0, t, 0.0, 1.0, max_chunk_elements=max_chunk_elements), l_full)


def test_rkd_angle_saves_no_cubic_or_batch_pair_width_tensor_for_backward():
    # whatever the chunking, backward keeps the (B, D) features and (B, B) distances only: no (B, B, D) differences
    # and no (B, B, B) cosines
    saved = []

    def pack(tensor):
        saved.append(tensor.numel())
        return tensor

    s, t = _randn(16, 32, seed=32).requires_grad_(True), _randn(16, 8, seed=33)
    for chunk in (1 << 24, 16 * 16, 1):
        saved.clear()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
            loss = rkd_angle_loss(s, t, max_chunk_elements=chunk)
        assert saved and max(saved) <= 16 * 32
        loss.backward()


@pytest.mark.parametrize("chunk", [1 << 24, 1, 2, 3])
def test_rkd_angle_gradient_float64_gradcheck(chunk):
    # the hand-written backward of the chunked angle sum and of the squared distances, checked in float64 against
    # finite differences (the public loss keeps its cosines in float32, too coarse for gradcheck); features scaled by
    # 5 make some cosine differences exceed 1, so Huber's linear branch is exercised as well
    s = (5 * _randn(7, 4, seed=34)).double().requires_grad_(True)
    t2 = _squared_distances(_randn(7, 5, seed=35).double())
    assert torch.autograd.gradcheck(
        lambda x: _AngleHuberSum.apply(_squared_distances(x), t2, chunk, torch.float64), (s,)
    )
    assert torch.autograd.gradcheck(_squared_distances, (s,))


def test_rkd_teacher_gets_no_grad_and_student_does():
    s = _randn(5, 4, seed=14).requires_grad_(True)
    t = _randn(5, 6, seed=15).requires_grad_(True)
    rkd_loss(s, t).backward()
    assert t.grad is None
    assert s.grad is not None and torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0


# =====================================================================================================================
# RRD (functional)
# =====================================================================================================================
@pytest.mark.parametrize("tau_s,tau_t", [(0.04, 0.1), (0.1, 0.02), (0.5, 0.5)])
def test_rrd_matches_reference(tau_s, tau_t):
    norm = torch.nn.functional.normalize
    s, t, memory = (
        norm(_randn(5, 6, seed=20), dim=1),
        norm(_randn(5, 6, seed=21), dim=1),
        norm(_randn(9, 6, seed=22), dim=1),
    )
    _close(rrd_loss(s, t, memory, tau_s, tau_t), ref_rrd(s, t, memory, tau_s, tau_t))


def test_rrd_defaults_are_paper_temperatures():
    s, t, m = _randn(4, 3, seed=23), _randn(4, 3, seed=24), _randn(7, 3, seed=25)
    _close(rrd_loss(s, t, m), ref_rrd(s, t, m, 0.04, 0.1))


def test_rrd_hand_computed_two_keys():
    # memory = {e1, e2}, τ_s = τ_t = 1, teacher e1, student e2
    # p_t = softmax(1, 0) = (e, 1) / (1 + e); log p_s = log softmax(0, 1) = (-ln(1+e), 1 - ln(1+e))
    # CE = e/(1+e) ln(1+e) + 1/(1+e) (ln(1+e) - 1) = ln(1+e) - 1/(1+e) = 1.3132617 - 0.2689414 = 1.0443203
    memory = torch.eye(2)
    loss = rrd_loss(torch.tensor([[0.0, 1.0]]), torch.tensor([[1.0, 0.0]]), memory, 1.0, 1.0)
    expected = math.log(1 + math.e) - 1 / (1 + math.e)
    assert math.isclose(expected, 1.0443203, abs_tol=1e-6)
    _close(loss, expected)


# =====================================================================================================================
# RRD module and its FIFO queue
# =====================================================================================================================
def _rrd_module(queue_size=10, embed_dim=3, seed=0, **kwargs) -> RRDLoss:
    torch.manual_seed(seed)
    return RRDLoss(student_dim=5, teacher_dim=4, embed_dim=embed_dim, queue_size=queue_size, **kwargs)


def _features(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    return _randn(n, 5, seed=seed), _randn(n, 4, seed=seed + 1000)


def test_rrd_module_loss_uses_queue_before_enqueue():
    module = _rrd_module()
    fs, ft = _features(4, 1)
    keys_before = module.queue.keys.clone()
    s, t = module.embed_student(fs), module.embed_teacher(ft)
    assert torch.allclose(s.norm(dim=1), torch.ones(4)) and torch.allclose(t.norm(dim=1), torch.ones(4))
    loss = module(fs, ft)
    _close(loss, ref_rrd(s, t, keys_before, 0.04, 0.1))
    _close(loss, rrd_loss(s, t, keys_before).item(), rtol=1e-6)
    # the batch's teacher keys were enqueued afterwards
    assert torch.equal(module.queue.keys[:4], t)
    assert torch.equal(module.queue.keys[4:], keys_before[4:])


@pytest.mark.parametrize("enqueue_before_loss", [False, True])
def test_rrd_deferred_enqueue_trains_exactly_like_immediate_enqueue(enqueue_before_loss):
    immediate = _rrd_module(queue_size=10, enqueue_before_loss=enqueue_before_loss)
    deferred = _rrd_module(queue_size=10, enqueue_before_loss=enqueue_before_loss, defer_enqueue=True)
    for step in range(4):  # 4 batches of 3 wrap around the queue of 10
        fs, ft = _features(3, 300 + step)
        losses = []
        for module in (immediate, deferred):
            module.zero_grad()
            loss = module(fs, ft)
            loss.backward()
            losses.append((loss.detach(), module.student_head.weight.grad.clone()))
        deferred.commit_enqueue()
        torch.testing.assert_close(losses[1], losses[0], rtol=0, atol=0)
        for name, value in immediate.state_dict().items():
            torch.testing.assert_close(deferred.state_dict()[name], value, rtol=0, atol=0)


def test_rrd_deferred_keys_are_committed_by_the_next_forward_or_a_state_dict():
    immediate, deferred = _rrd_module(), _rrd_module(defer_enqueue=True)
    fs, ft = _features(4, 310)
    immediate(fs, ft)
    deferred(fs, ft).backward()
    assert int(deferred.queue.num_enqueued) == 0  # held back: the backward above still needed the queue
    # a checkpoint taken now contains the batch's keys
    assert torch.equal(deferred.state_dict()["queue.keys"], immediate.queue.keys)
    assert int(deferred.queue.num_enqueued) == 4
    # without a commit, the next forward writes the pending keys first, exactly where immediate enqueueing did
    fs2, ft2 = _features(4, 311)
    deferred.zero_grad()
    deferred(fs2, ft2).backward()
    deferred2, immediate2 = _rrd_module(defer_enqueue=True), _rrd_module()
    deferred2(fs, ft).backward()
    out = deferred2(fs2, ft2)  # commits batch 1 at its start
    immediate2(fs, ft)
    _close(out.detach(), immediate2(fs2, ft2).detach())
    assert torch.equal(deferred2.queue.keys, immediate.queue.keys)


def test_rrd_deferred_enqueue_reads_the_queue_without_copying_it():
    saved = []

    def pack(tensor):
        saved.append(tensor.untyped_storage().data_ptr())
        return tensor

    for defer in (False, True):
        module = _rrd_module(defer_enqueue=defer)
        saved.clear()
        fs, ft = _features(4, 320)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
            loss = module(fs, ft)
        assert (module.queue.keys.untyped_storage().data_ptr() in saved) == defer
        loss.backward()


def test_fifo_wraps_around_when_size_is_not_a_multiple_of_batch():
    module = _rrd_module(queue_size=10)
    initial = module.queue.keys.clone()
    assert torch.allclose(initial.norm(dim=1), torch.ones(10))  # rows are unit keys
    assert int(module.queue.ptr) == 0 and int(module.queue.num_enqueued) == 0
    ts, ptrs = [], []
    for step in range(3):
        fs, ft = _features(4, 100 + step)
        ts.append(module.embed_teacher(ft))
        module(fs, ft)
        ptrs.append(int(module.queue.ptr))
    assert ptrs == [4, 8, 2]
    keys = module.queue.keys
    assert torch.equal(keys[0:2], ts[2][2:4])  # wrapped tail of batch 3
    assert torch.equal(keys[2:4], ts[0][2:4])  # survivors of batch 1
    assert torch.equal(keys[4:8], ts[1])
    assert torch.equal(keys[8:10], ts[2][0:2])
    assert int(module.queue.num_enqueued) == 12
    assert module.queue.fill == 1.0

    # a smaller last batch (3 samples) continues at the pointer
    fs, ft = _features(3, 200)
    t_last = module.embed_teacher(ft)
    before = keys.clone()
    module(fs, ft)
    assert int(module.queue.ptr) == 5
    assert torch.equal(module.queue.keys[2:5], t_last)
    assert torch.equal(module.queue.keys[:2], before[:2]) and torch.equal(module.queue.keys[5:], before[5:])
    assert int(module.queue.num_enqueued) == 15


def test_fifo_more_keys_than_size_keeps_the_newest_in_fifo_order():
    queue = FIFOQueue(size=4, dim=2)
    queue.enqueue(torch.tensor([[1.0, 0.0]]))
    first = torch.arange(14, dtype=torch.float32).reshape(7, 2)
    queue.enqueue(first)  # 7 keys into a queue of 4: keep the last 4
    ptr = int(queue.ptr)
    ring = torch.cat([queue.keys[ptr:], queue.keys[:ptr]])  # oldest -> newest, starting at the write position
    assert torch.equal(ring, first[-4:])
    # the next key overwrites the oldest survivor
    queue.enqueue(torch.tensor([[-1.0, -1.0]]))
    ptr2 = int(queue.ptr)
    ring = torch.cat([queue.keys[ptr2:], queue.keys[:ptr2]])
    assert torch.equal(ring, torch.cat([first[-3:], torch.tensor([[-1.0, -1.0]])]))


def test_fifo_gather_fn_is_applied_before_enqueue():
    queue = FIFOQueue(size=6, dim=2, gather_fn=lambda x: torch.cat([x, 10 * x]))
    keys = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    queue.enqueue(keys)
    assert int(queue.ptr) == 4
    assert torch.equal(queue.keys[:4], torch.cat([keys, 10 * keys]))


def test_rrd_enqueue_before_loss_puts_current_keys_in_memory():
    before_module = _rrd_module(seed=3, enqueue_before_loss=False)
    after_module = _rrd_module(seed=3, enqueue_before_loss=True)
    assert torch.equal(before_module.queue.keys, after_module.queue.keys)
    fs, ft = _features(4, 7)
    keys_before = after_module.queue.keys.clone()
    s, t = after_module.embed_student(fs), after_module.embed_teacher(ft)
    keys_after = keys_before.clone()
    keys_after[:4] = t

    loss_enqueue_first = after_module(fs, ft)
    loss_enqueue_after = before_module(fs, ft)
    _close(loss_enqueue_first, ref_rrd(s, t, keys_after, 0.04, 0.1))
    _close(loss_enqueue_after, ref_rrd(s, t, keys_before, 0.04, 0.1))
    assert abs(loss_enqueue_first.item() - loss_enqueue_after.item()) > 1e-3
    # both end with the same queue
    assert torch.equal(after_module.queue.keys, before_module.queue.keys)
    assert int(after_module.queue.ptr) == int(before_module.queue.ptr) == 4


@pytest.mark.parametrize("enqueue_before_loss", [False, True])
def test_rrd_eval_mode_does_not_change_queue(enqueue_before_loss):
    module = _rrd_module(enqueue_before_loss=enqueue_before_loss)
    module(*_features(4, 1))
    module.eval()
    keys, ptr, n = module.queue.keys.clone(), int(module.queue.ptr), int(module.queue.num_enqueued)
    fs, ft = _features(4, 2)
    loss = module(fs, ft)
    assert torch.equal(module.queue.keys, keys)
    assert int(module.queue.ptr) == ptr and int(module.queue.num_enqueued) == n
    _close(loss, ref_rrd(module.embed_student(fs), module.embed_teacher(ft), keys, 0.04, 0.1))


def test_rrd_state_dict_round_trip_restores_queue_and_pointer():
    module = _rrd_module(seed=5)
    for step in range(3):
        module(*_features(4, 300 + step))
    state = module.state_dict()
    assert {"queue.keys", "queue.ptr", "queue.num_enqueued"} <= set(state)

    restored = _rrd_module(seed=6)
    # its own write position (4) is now known on the host: loading must replace it
    restored(*_features(4, 500))
    assert restored.queue.fill == 0.4
    assert not torch.equal(restored.queue.keys, module.queue.keys)
    restored.load_state_dict(state)
    assert restored.queue.fill == module.queue.fill == 1.0
    assert torch.equal(restored.queue.keys, module.queue.keys)
    assert restored.queue.ptr.dtype == torch.long and int(restored.queue.ptr) == int(module.queue.ptr) == 2
    assert int(restored.queue.num_enqueued) == 12
    # identical continuation
    fs, ft = _features(3, 400)
    assert torch.equal(module(fs, ft), restored(fs, ft))
    assert torch.equal(module.queue.keys, restored.queue.keys)
    assert int(module.queue.ptr) == int(restored.queue.ptr) == 5


def test_rrd_module_teacher_head_gets_no_grad_student_head_does():
    module = _rrd_module()
    fs, ft = _features(4, 9)
    fs.requires_grad_(True)
    ft.requires_grad_(True)
    module(fs, ft).backward()
    assert module.teacher_head.weight.grad is None and module.teacher_head.bias.grad is None
    assert not module.teacher_head.weight.requires_grad
    assert module.student_head.weight.grad is not None and module.student_head.weight.grad.abs().sum() > 0
    assert fs.grad is not None and ft.grad is None
    assert not module.queue.keys.requires_grad


def test_rrd_module_in_half_precision_inputs_returns_float32():
    module = _rrd_module()
    fs, ft = _features(4, 11)
    loss = module.eval()(fs.to(torch.bfloat16), ft.to(torch.bfloat16))
    assert loss.dtype == torch.float32
    ref = module(fs.to(torch.bfloat16).float(), ft.to(torch.bfloat16).float())
    assert torch.allclose(loss, ref)


# =====================================================================================================================
# VRM
# =====================================================================================================================
@pytest.mark.parametrize("prune_percentile", [90.0, 55.0, 100.0])
@pytest.mark.parametrize("zsnorm", [True, False])
@pytest.mark.parametrize("b,c", [(5, 5), (4, 6), (6, 3)])
def test_vrm_matches_reference(b, c, zsnorm, prune_percentile):
    s, s_v, t, t_v = _vrm_inputs(b, c, seed=30)
    expected_mask = ref_keep_mask(s, s_v, prune_percentile)
    assert np.array_equal(joint_entropy_keep_mask(s, s_v, prune_percentile).numpy(), expected_mask)
    if prune_percentile < 100:
        assert 0 < expected_mask.sum() < b * b  # the pruning actually removes edges
    expected = ref_vrm(s, s_v, t, t_v, prune_percentile=prune_percentile, zsnorm=zsnorm)
    _close(vrm_loss(s, s_v, t, t_v, prune_percentile=prune_percentile, zsnorm=zsnorm), expected)
    _close(
        vrm_loss(s, s_v, t, t_v, 3.0, 0.5, prune_percentile=prune_percentile, zsnorm=zsnorm),
        ref_vrm(s, s_v, t, t_v, 3.0, 0.5, prune_percentile=prune_percentile, zsnorm=zsnorm),
    )
    module = VRMLoss(prune_percentile=prune_percentile, zsnorm=zsnorm)
    l_is, l_ic = ref_vrm_terms(s, s_v, t, t_v, prune_percentile, zsnorm)
    terms = module.compute_terms(s, s_v, t, t_v)
    assert set(terms) == {"vrm_inter_sample", "vrm_inter_class"}
    _close(terms["vrm_inter_sample"], 128 * l_is)
    _close(terms["vrm_inter_class"], 32 * l_ic)
    _close(module(s, s_v, t, t_v), expected)
    assert module.last_kept_fraction == pytest.approx(expected_mask.mean())


def test_vrm_pruning_percentile_uses_linear_interpolation():
    # B = 3 -> 9 joint entropies; the 50th percentile is exactly the 5th smallest (position 4), the 60th percentile
    # lies between the 5th and 6th (position 4.8) -> both keep exactly 5 edges; the 95th keeps 8.
    s, s_v = _randn(3, 4, seed=40) * 2, _randn(3, 4, seed=41) * 2
    for p, n_kept in ((50.0, 5), (60.0, 5), (95.0, 8), (100.0, 9)):
        mask = joint_entropy_keep_mask(s, s_v, p)
        assert mask.dtype == torch.bool and mask.shape == (3, 3)
        assert int(mask.sum()) == n_kept
        assert np.array_equal(mask.numpy(), ref_keep_mask(s, s_v, p))
    # the threshold equals torch.quantile over the B² values (linear interpolation)
    h = lambda z: -(z.softmax(1) * z.log_softmax(1)).sum(1)  # noqa: E731
    joint = h(s)[:, None] + h(s_v)[None, :]
    assert torch.equal(joint_entropy_keep_mask(s, s_v, 60.0), joint <= torch.quantile(joint.flatten(), 0.6))


def test_vrm_pruning_uses_raw_not_zscored_logits():
    # scaling the student logits leaves the z-scored relations unchanged but changes the entropies, hence the mask
    s, s_v, t, t_v = _vrm_inputs(5, 5, seed=42)
    s_scaled = s * 0.05
    assert torch.allclose(zscore_normalize(s_scaled), zscore_normalize(s), atol=1e-3)
    _close(vrm_loss(s_scaled, s_v, t, t_v), ref_vrm(s_scaled, s_v, t, t_v), rtol=1e-5)
    assert not torch.equal(
        joint_entropy_keep_mask(s, s_v, 50.0), joint_entropy_keep_mask(s_scaled, s_v, 50.0)
    )


def test_vrm_hand_computed_single_sample_two_classes():
    # B = 1, C = 2, no ZSNorm, no pruning. Student z = (1, 0), z~ = (0, 0); teacher z = (0, 1), z~ = (0, 0).
    # IS: one edge, normalize(1, 0) = (1, 0) vs (0, 1): Huber(1) + Huber(-1) = 1, / (1 edge * C=2) = 0.5
    # IC: columns are scalars; student edges (c,d): (0,0)=1, (0,1)=1, (1,0)=0, (1,1)=0 (normalize(0) = 0),
    #     teacher: 0, 0, 1, 1 -> four Huber(±1) = 0.5 -> 2 / (C·C·B = 4) = 0.5
    # total = 128 * 0.5 + 32 * 0.5 = 80
    s, s_v = torch.tensor([[1.0, 0.0]]), torch.zeros(1, 2)
    t, t_v = torch.tensor([[0.0, 1.0]]), torch.zeros(1, 2)
    assert math.isclose(ref_vrm(s, s_v, t, t_v, prune_percentile=100.0, zsnorm=False), 80.0)
    _close(vrm_inter_sample_loss(s, s_v, t, t_v), 0.5)
    _close(vrm_inter_class_loss(s, s_v, t, t_v), 0.5)
    _close(vrm_loss(s, s_v, t, t_v, prune_percentile=100.0, zsnorm=False), 80.0)


def test_zscore_normalize_reference():
    z = _randn(4, 6, seed=43) * 5 + 2
    expected = torch.tensor(_ref_zscore(_rows(z)), dtype=torch.float64)
    assert torch.allclose(zscore_normalize(z).double(), expected, rtol=1e-5, atol=1e-6)
    # an all-equal row maps to zeros (sqrt(var + 1e-6), not std + eps)
    assert torch.equal(zscore_normalize(torch.full((2, 3), 7.0)), torch.zeros(2, 3))


@pytest.mark.parametrize("max_chunk_elements", [1, 7, 60, 100])
@pytest.mark.parametrize("prune_percentile", [90.0, 100.0])
def test_vrm_chunked_equals_unchunked_value_and_gradient(max_chunk_elements, prune_percentile):
    # B=6, C=5: IS rows of 6*5=30 elements, IC rows of 5*6=30 -> max 60 gives 2-row chunks (6 = 2+2+2, 5 = 2+2+1)
    base = _vrm_inputs(6, 5, seed=50)
    t = base[2].clone().requires_grad_(True)
    results = []
    for chunk in (1 << 24, max_chunk_elements):
        s, s_v = base[0].clone().requires_grad_(True), base[1].clone().requires_grad_(True)
        loss = vrm_loss(s, s_v, t, base[3], prune_percentile=prune_percentile, max_chunk_elements=chunk)
        loss.backward()
        results.append((loss.detach(), s.grad, s_v.grad))
    (l_full, g_full, gv_full), (l_chunk, g_chunk, gv_chunk) = results
    assert torch.allclose(l_chunk, l_full, rtol=1e-6, atol=1e-7)
    assert torch.allclose(g_chunk, g_full, rtol=1e-5, atol=1e-7)
    assert torch.allclose(gv_chunk, gv_full, rtol=1e-5, atol=1e-7)
    assert g_full.abs().sum() > 0 and gv_full.abs().sum() > 0
    assert t.grad is None
    _close(l_chunk, ref_vrm(*base, prune_percentile=prune_percentile))
    # chunked without autograd (no checkpointing path) gives the same value
    with torch.no_grad():
        l_nograd = vrm_loss(*base, prune_percentile=prune_percentile, max_chunk_elements=max_chunk_elements)
    assert torch.allclose(l_nograd, l_full, rtol=1e-6, atol=1e-7)
    # the module forwards the chunk size
    module = VRMLoss(prune_percentile=prune_percentile, max_chunk_elements=max_chunk_elements)
    assert torch.allclose(module(*base), l_full, rtol=1e-6, atol=1e-7)


def test_vrm_module_with_adaptor_starts_as_identity_and_trains():
    s, s_v, t, t_v = _vrm_inputs(5, 5, seed=60)
    module = VRMLoss(num_classes=5, adaptor=True)
    _close(module(s, s_v, t, t_v), float(vrm_loss(s, s_v, t, t_v)), rtol=1e-6)
    module(s, s_v, t, t_v).backward()
    assert module.adaptor.fc2.weight.grad is not None and module.adaptor.fc2.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError):
        VRMLoss(adaptor=True)


def test_vrm_teacher_gets_no_grad():
    s, s_v, t, t_v = (x.clone().requires_grad_(True) for x in _vrm_inputs(4, 5, seed=61))
    VRMLoss()(s, s_v, t, t_v).backward()
    assert t.grad is None and t_v.grad is None
    assert s.grad is not None and s_v.grad is not None


@pytest.mark.parametrize("max_chunk_elements", [1 << 24, 16])
@pytest.mark.parametrize("weighted", [False, True])
def test_vrm_edges_keep_only_their_inputs_and_match_autograd(max_chunk_elements, weighted):
    """VRM's relation tensors (B×B×C and C×C×B) are rebuilt in backward instead of saved, and the hand-written
    gradient equals autograd's through F.normalize and Huber, also for a zero difference and one below
    F.normalize's eps (where only the clamped norm's branch applies)."""
    g = torch.Generator().manual_seed(90)
    a = torch.randn(7, 5, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(6, 5, generator=g, dtype=torch.float64)
    b[0], b[1] = a[0].detach(), a[1].detach() + 1e-10
    b.requires_grad_(True)
    a_t, b_t = (
        3 * torch.randn(7, 5, generator=g, dtype=torch.float64),
        torch.randn(6, 5, generator=g).double(),
    )
    weight = (torch.rand(7, 6, generator=g) > 0.3).double() if weighted else None

    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
        total = _chunked_edge_huber_sum(a, b, a_t, b_t, weight, max_chunk_elements)
    assert max(saved) <= 7 * 6  # the inputs and the (rows, cols) weight, never a (rows, cols, dim) tensor
    expected = _edge_huber_sum(a, b, a_t, b_t, weight)
    assert torch.equal(total, expected) or max_chunk_elements == 16  # chunks only change the order of the sum
    torch.testing.assert_close(total, expected, rtol=1e-12, atol=0)
    for got, want in zip(torch.autograd.grad(total, (a, b)), torch.autograd.grad(expected, (a, b))):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12 * float(want.abs().max()))


# =====================================================================================================================
# Gradients w.r.t. the student: analytic (KD) or central differences of the float64 references
# =====================================================================================================================
def _numeric_grad(fn, x: torch.Tensor, h: float = 1e-6) -> torch.Tensor:
    x = x.detach().double()
    grad = torch.zeros_like(x)
    for idx in np.ndindex(*x.shape):
        plus, minus = x.clone(), x.clone()
        plus[idx] += h
        minus[idx] -= h
        grad[idx] = (fn(plus) - fn(minus)) / (2 * h)
    return grad


def _assert_grad_close(actual: torch.Tensor, expected: torch.Tensor, rtol: float = 1e-3) -> None:
    assert actual is not None and actual.dtype == torch.float32
    scale = float(expected.abs().max())
    assert scale > 0
    assert torch.allclose(actual.double(), expected, rtol=rtol, atol=rtol * scale), (actual, expected)


@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_kd_gradient_is_t_times_softmax_difference(temperature):
    # d/ds [T² · KL(softmax(t/T) ‖ softmax(s/T))] averaged over B = T · (softmax(s/T) − softmax(t/T)) / B
    s, t = _leaf(3 * _randn(4, 5, seed=80)), _leaf(3 * _randn(4, 5, seed=81))
    kd_loss(s, t, temperature).backward()
    expected = temperature * (
        torch.softmax(s.double() / temperature, 1) - torch.softmax(t.double() / temperature, 1)
    )
    _assert_grad_close(s.grad, expected.detach() / 4, rtol=1e-5)
    assert t.grad is None
    _assert_grad_close(s.grad, _numeric_grad(lambda x: ref_kd(x, t, temperature), s), rtol=1e-4)


def test_rkd_gradient_matches_reference():
    s, t = _leaf(_randn(4, 3, seed=82)), _randn(4, 5, seed=83)
    rkd_loss(s, t).backward()
    _assert_grad_close(s.grad, _numeric_grad(lambda x: ref_rkd(x, t), s))


def test_rrd_gradient_matches_reference():
    norm = torch.nn.functional.normalize
    s, t, m = (
        _leaf(norm(_randn(3, 4, seed=84), dim=1)),
        norm(_randn(3, 4, seed=85), dim=1),
        norm(_randn(6, 4, seed=86), dim=1),
    )
    rrd_loss(s, t, m, 0.1, 0.05).backward()
    _assert_grad_close(s.grad, _numeric_grad(lambda x: ref_rrd(x, t, m, 0.1, 0.05), s))


@pytest.mark.parametrize("zsnorm", [True, False])
def test_vrm_gradient_matches_reference(zsnorm):
    s, s_v, t, t_v = _vrm_inputs(4, 4, seed=87)
    s, s_v = _leaf(s), _leaf(s_v)
    vrm_loss(s, s_v, t, t_v, prune_percentile=80.0, zsnorm=zsnorm).backward()
    _assert_grad_close(
        s.grad, _numeric_grad(lambda x: ref_vrm(x, s_v, t, t_v, prune_percentile=80.0, zsnorm=zsnorm), s)
    )
    _assert_grad_close(
        s_v.grad, _numeric_grad(lambda x: ref_vrm(s, x, t, t_v, prune_percentile=80.0, zsnorm=zsnorm), s_v)
    )


# =====================================================================================================================
# Module wrappers equal the functional forms
# =====================================================================================================================
def test_modules_equal_functional_forms():
    s, t = _randn(5, 6, seed=70), _randn(5, 6, seed=71)
    assert torch.equal(KDLoss(3.0)(s, t), kd_loss(s, t, 3.0))
    assert torch.equal(KDLoss()(s, t), kd_loss(s, t))
    assert torch.allclose(RKDLoss(2.0, 3.0)(s, t), rkd_loss(s, t, 2.0, 3.0), rtol=1e-6)
    assert torch.allclose(RKDLoss()(s, t), rkd_loss(s, t), rtol=1e-6)
    vrm_args = _vrm_inputs(5, 6, seed=72)
    assert torch.allclose(VRMLoss()(*vrm_args), vrm_loss(*vrm_args), rtol=1e-6)
    assert torch.allclose(
        VRMLoss(10.0, 2.0, prune_percentile=70.0, zsnorm=False)(*vrm_args),
        vrm_loss(*vrm_args, 10.0, 2.0, prune_percentile=70.0, zsnorm=False),
        rtol=1e-6,
    )
    assert KDLoss()(s, t).dtype == RKDLoss()(s, t).dtype == VRMLoss()(*vrm_args).dtype == torch.float32


# =====================================================================================================================
# Errors
# =====================================================================================================================
def test_mismatched_batch_sizes_raise():
    a, b = torch.randn(4, 5), torch.randn(3, 5)
    with pytest.raises(ValueError, match="batch size"):
        kd_loss(a, b)
    with pytest.raises(ValueError, match="batch size"):
        rkd_loss(a, b)
    with pytest.raises(ValueError, match="batch size"):
        rrd_loss(a, b, torch.randn(7, 5))
    with pytest.raises(ValueError, match="batch size"):
        vrm_loss(a, a, b, b)
    with pytest.raises(ValueError, match="batch size"):
        vrm_loss(a, b, a, a)
    with pytest.raises(ValueError):
        RRDLoss(5, 5, embed_dim=3, queue_size=8)(a, b)


def test_mismatched_widths_raise_where_required():
    with pytest.raises(ValueError):
        kd_loss(torch.randn(4, 5), torch.randn(4, 6))
    with pytest.raises(ValueError):
        vrm_loss(torch.randn(4, 5), torch.randn(4, 5), torch.randn(4, 6), torch.randn(4, 6))
    with pytest.raises(ValueError):
        rrd_loss(torch.randn(4, 5), torch.randn(4, 5), torch.randn(7, 4))
    rkd_loss(torch.randn(4, 5), torch.randn(4, 9))  # RKD accepts different widths


@pytest.mark.parametrize(
    "shapes",
    [
        ((4, 5), (4, 5), (1, 5), (4, 5)),  # a teacher batch of 1 would broadcast silently
        ((4, 5), (4, 5), (4, 5), (1, 5)),
        ((4, 5), (4, 5), (4, 1), (4, 1)),  # a teacher width of 1 too
        ((4, 5), (3, 5), (4, 5), (3, 5)),
    ],
)
def test_vrm_module_and_term_functions_reject_mismatched_shapes(shapes):
    args = [torch.randn(*shape) for shape in shapes]
    for prune_percentile in (90.0, 100.0):
        with pytest.raises(ValueError):
            VRMLoss(prune_percentile=prune_percentile)(*args)
        with pytest.raises(ValueError):
            vrm_loss(*args, prune_percentile=prune_percentile)
    with pytest.raises(ValueError):
        vrm_inter_sample_loss(*args)
    with pytest.raises(ValueError):
        vrm_inter_class_loss(*args)


def test_vrm_inter_sample_rejects_wrong_keep_shape():
    x = torch.randn(4, 5)
    with pytest.raises(ValueError, match="keep"):
        vrm_inter_sample_loss(x, x, x, x, keep=torch.ones(4, 1, dtype=torch.bool))


@pytest.mark.parametrize("bad", [0.0, -1.0])
def test_non_positive_temperatures_raise(bad):
    s, t, m = torch.randn(2, 3), torch.randn(2, 3), torch.randn(4, 3)
    with pytest.raises(ValueError, match="temperature"):
        kd_loss(s, t, temperature=bad)
    with pytest.raises(ValueError, match="temperature"):
        KDLoss(temperature=bad)
    with pytest.raises(ValueError, match="temperature"):
        rrd_loss(s, t, m, student_temperature=bad)
    with pytest.raises(ValueError, match="temperature"):
        rrd_loss(s, t, m, teacher_temperature=bad)
    with pytest.raises(ValueError, match="temperature"):
        RRDLoss(3, 3, student_temperature=bad)
    with pytest.raises(ValueError, match="temperature"):
        RRDLoss(3, 3, teacher_temperature=bad)


@pytest.mark.parametrize("bad", [0.0, -10.0, 100.5, 200.0])
def test_percentile_outside_range_raises(bad):
    x = torch.randn(3, 4)
    with pytest.raises(ValueError, match="prune_percentile"):
        vrm_loss(x, x, x, x, prune_percentile=bad)
    with pytest.raises(ValueError, match="prune_percentile"):
        joint_entropy_keep_mask(x, x, bad)
    with pytest.raises(ValueError, match="prune_percentile"):
        VRMLoss(prune_percentile=bad)


def test_invalid_queue_and_weights_raise():
    with pytest.raises(ValueError):
        FIFOQueue(0, 4)
    with pytest.raises(ValueError):
        RKDLoss(distance_weight=-1.0)


# ----------------------------------------------------------------------------------------------------------------------
# torch.compile of the functional cores
def test_compile_losses_compiles_each_core_once_and_computes_the_same_values_and_gradients():
    from hf_relkd.losses import compile_losses

    def inputs(seed: int, b: int):
        s, t = _randn(b, 12, seed=seed), _randn(b, 12, seed=seed + 1)
        return {
            "kd": ([_leaf(s), t], KDLoss()),
            "rkd": ([_leaf(s), t], RKDLoss()),
            "rrd": ([_leaf(s), t], RRDLoss(12, 12, embed_dim=8, queue_size=16)),
            "vrm": ([_leaf(s), _leaf(s + 0.3 * t), t, t + 0.1 * s], VRMLoss()),
        }

    modules = {name: module for name, (_, module) in inputs(0, 6).items()}
    compiled = {name: copy.deepcopy(module) for name, module in modules.items()}
    holder = torch.nn.ModuleDict(compiled)
    # VRM has two cores (pruning mask, terms), RRD two (the loss alone, used when keys are enqueued before it, and
    # projections + loss)
    assert compile_losses(holder, backend="aot_eager") == 6
    assert compile_losses(holder, backend="aot_eager") == 0  # already compiled
    assert holder.state_dict().keys() == torch.nn.ModuleDict(modules).state_dict().keys()
    for seed, b in [(1, 6), (2, 6), (3, 5)]:  # a second batch size recompiles; the values must not change
        for name, (args, _) in inputs(seed, b).items():
            twin = [a.detach().clone().requires_grad_(a.requires_grad) for a in args]
            expected, actual = modules[name](*args), compiled[name](*twin)
            expected.backward()
            actual.backward()
            torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-6, msg=name)
            for a, c in zip(args, twin):
                if a.requires_grad:
                    torch.testing.assert_close(c.grad, a.grad, rtol=1e-5, atol=1e-6, msg=name)
    torch.testing.assert_close(
        compiled["rrd"].queue.keys, modules["rrd"].queue.keys
    )  # the queue stayed eager
    # the heads' parameters are arguments of the compiled function: the student head gets the same gradient
    head, eager_head = compiled["rrd"].student_head, modules["rrd"].student_head
    for p, q in zip(head.parameters(), eager_head.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-6)
    assert compiled["rrd"].teacher_head.weight.grad is None


def test_compile_losses_rejects_cuda_graph_modes():
    from hf_relkd.losses import compile_losses

    with pytest.raises(ValueError, match="CUDA-graph modes"):
        compile_losses(RKDLoss(), mode="reduce-overhead")
