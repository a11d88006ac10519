"""k-NN radii and PRDC ball memberships from float32 distance blocks, exact in float64.

The definition is the float64 one of :mod:`synthguard.functional.fidelity`: squared distances
``‖a‖² + ‖b‖² − 2a·b`` in float64, the (k+1)-th smallest of each row (the row itself at 0),
and strict "inside" tests against radii lowered by the tie tolerance. Here every distance is
first computed in float32 (one matmul per block: twice the float64 rate on CPUs, far more on
GPUs) and float64 is recomputed only where a float32 value lies within a rigorous rounding
bound of a decision. Where the bound cannot certify the answer (reduced-precision matmuls,
rows far from their mean, many near-equal distances) the functions return ``None`` and the
caller runs the float64 path, so the answer never depends on which path ran.

Error bound, per pair, in squared distance; ``u = 2⁻²⁴``, ``v = 2⁻⁵³``, ``γ_n = nu/(1 − nu)``.
Rows are centred on a common mean ``c`` and scaled by a power of two ``σ`` (exact) before
rounding to float32 (``y``); ``m_i = σ‖x_i − c‖``, ``M = max m_i²``, ``S = max ‖x_i‖²``.

* Rounding the rows moves ``y_i − y_j`` by ``‖e‖ ≤ u'(m_i + m_j)`` (``u' = u + v + uv``), so
  the squared distance by at most ``(2u' + u'²)(m_i + m_j)² ≤ 8.1·u·M``.
* One float32 matmul of ``[y_i, ‖y_i‖², 1]`` with ``[−2y_j, 1, ‖y_j‖²]`` errs by at most
  ``γ_{d+2}(2‖y_i‖‖y_j‖ + ‖y_i‖² + ‖y_j‖²) ≤ 4.1(d + 2)·u·M`` in any summation order (blocked,
  FMA, split-K), plus ``2.1·u·M`` for the norms rounded to float32.
* The float64 definition is within ``(4d + 8)·v·S`` of the exact distance (dot product and
  norms ``γ_d`` each, two additions), and so is a float64 recomputation in any other order.

Hence ``|float32 − float64 definition| ≤ δ = 2(4d + 18)·u·M + ε·σ²`` with
``ε = 2(4d + 8)·v·S``: the factor 2 covers the second-order terms and the rounding of the
bounds themselves. Underflow adds at most ``2⁻¹⁴⁰`` per term (``2⁻¹⁰⁷⁰`` in float64).
"""

from __future__ import annotations

import math

import torch

from synthguard.functional._common import sq_dists

__all__ = ["fast_prdc", "fast_radii_sq", "ieee_float32_matmul"]

_U32, _U64 = 2.0**-24, 2.0**-53
_EXTRA = 6  # float32 candidates kept per row beyond the k+1 nearest
# Entries per group when selecting the smallest of each row (columns) or column (rows): about
# sqrt(entries / kept) balances the minima's topk against the groups' gather.
_GROUP, _COL_GROUP = 16, 8
_PAIR_CHUNK = 4096  # pairs per float64 recomputation step
_MAX_BLOCK = 2**20  # float32 sums of 0/1 stay exact below 2**24 rows


class _Uncertain(Exception):
    """The float32 bound cannot certify the answer: the float64 path decides."""


def ieee_float32_matmul(device: torch.device) -> bool:
    """Whether float32 matmuls on ``device`` round in IEEE float32 (no TF32/bf16 inputs)."""
    if device.type not in ("cpu", "cuda") or torch.get_float32_matmul_precision() != "highest":
        return False
    flags = [getattr(torch.backends, "fp32_precision", "none")]
    if device.type == "cuda":
        matmul = torch.backends.cuda.matmul
        if matmul.allow_tf32:
            return False
        flags.append(getattr(matmul, "fp32_precision", "none"))
    else:
        mkldnn = getattr(getattr(torch.backends, "mkldnn", None), "matmul", None)
        flags.append(getattr(mkldnn, "fp32_precision", "none"))
    return all(flag in ("none", "ieee") for flag in flags)


class _Rows:
    """Float64 rows and their float32 operands: ``left[i] · right[j] = ‖y_i − y_j‖²``."""

    def __init__(self, x: torch.Tensor, sq: torch.Tensor, center: torch.Tensor, scale: float):
        n, d = x.shape
        self.x, self.sq = x, sq  # sq: the float64 definition's norms, for recomputations
        self.left = torch.empty((n, d + 2), dtype=torch.float32, device=x.device)
        self.right = torch.empty_like(self.left)
        y = self.left[:, :d]
        y.copy_(torch.sub(x, center).mul_(scale))
        y_sq = y.double().square_().sum(dim=1)
        self.max_sq = float(y_sq.max())
        torch.mul(y, -2.0, out=self.right[:, :d])
        self.left[:, d], self.left[:, d + 1] = y_sq, 1.0
        self.right[:, d], self.right[:, d + 1] = 1.0, y_sq

    @property
    def n(self) -> int:
        return int(self.x.shape[0])


class _Bounds:
    """The float32 band ``delta`` (scaled units) and the float64 one ``eps`` (input units)."""

    def __init__(self, sets: list[_Rows], scale: float) -> None:
        d = sets[0].x.shape[1]
        big = max(float(s.sq.max()) for s in sets)
        if (d + 2) * _U32 > 1e-2 or not math.isfinite(big):
            raise _Uncertain
        self.scale_sq = scale * scale
        self.eps = 2.0 * (4 * d + 8) * (_U64 * big + 2.0**-1070)
        reduced = 2.0 * (4 * d + 18) * (_U32 * max(s.max_sq for s in sets) + 2.0**-140)
        self.delta = reduced + self.eps * self.scale_sq
        if not math.isfinite(self.delta):
            raise _Uncertain


def _prepare(sets: list[torch.Tensor]) -> tuple[list[_Rows], _Bounds]:
    """Centre all sets on their common mean and scale by a power of two to norms about 1."""
    total = sum(x.shape[0] for x in sets)
    center = torch.stack([x.sum(dim=0) for x in sets]).sum(dim=0) / total
    sqs = [(x * x).sum(dim=1) for x in sets]
    # Any power of two is exact; it only keeps float32 away from overflow and underflow, so
    # the expanded ‖x − c‖² (inaccurate far from the origin) is good enough to choose it.
    c_sq = float(center @ center)
    far = max(
        float((sq - 2.0 * (x @ center)).max()) + c_sq for x, sq in zip(sets, sqs, strict=True)
    )
    exponent = math.frexp(math.sqrt(far))[1] if far > 0 and math.isfinite(far) else 0
    scale = math.ldexp(1.0, -max(-1000, min(1000, exponent)))
    rows = [_Rows(x, sq, center, scale) for x, sq in zip(sets, sqs, strict=True)]
    return rows, _Bounds(rows, scale)


def _pair_sq(a: _Rows, i: torch.Tensor, b: _Rows, j: torch.Tensor) -> torch.Tensor:
    """Float64 ``clamp(‖a_i‖² + ‖b_j‖² − 2a_i·b_j, 0)`` for the pairs ``(i, j)``, in chunks."""
    out = torch.empty(i.numel(), dtype=torch.float64, device=a.x.device)
    for start in range(0, i.numel(), _PAIR_CHUNK):
        ii, jj = i[start : start + _PAIR_CHUNK], j[start : start + _PAIR_CHUNK]
        dot = (a.x[ii] * b.x[jj]).sum(dim=1)
        out[start : start + _PAIR_CHUNK] = (dot * -2.0 + a.sq[ii] + b.sq[jj]).clamp_min_(0.0)
    return out


def _row_smallest(dist: torch.Tensor, m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Values and columns of ``m`` smallest entries of each row of ``dist``.

    Columns are grouped (``c, c + q, c + 2q, …``); each of the ``m`` smallest entries lies in a
    group whose minimum is among the ``m`` smallest minima, so the minima (one fast strided
    reduction) pick ``m`` groups and ``topk`` runs on those, not on the whole row.
    """
    rows, width = dist.shape
    q = width // _GROUP
    if q < 4 * m:
        return torch.topk(dist, min(m, width), dim=1, largest=False, sorted=False)
    main = dist[:, : q * _GROUP].view(rows, _GROUP, q)
    first = torch.topk(main.amin(dim=1), m, dim=1, largest=False, sorted=False).indices
    picked = main.gather(2, first[:, None, :].expand(rows, _GROUP, m)).view(rows, -1)
    picked = torch.cat([picked, dist[:, q * _GROUP :]], dim=1)  # the < _GROUP left over
    values, at = torch.topk(picked, m, dim=1, largest=False, sorted=False)
    grouped = at // m * q + first.gather(1, at % m)
    return values, torch.where(at < _GROUP * m, grouped, at + (q - m) * _GROUP)


def _col_smallest(dist: torch.Tensor, m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`_row_smallest` of ``dist.T`` (``[width, m]``), grouping runs of rows."""
    height, width = dist.shape
    q = height // _COL_GROUP
    if q < 4 * m:
        values, at = torch.topk(dist, min(m, height), dim=0, largest=False, sorted=False)
        return values.T, at.T
    main = dist[: q * _COL_GROUP].view(q, _COL_GROUP, width)
    minima = main.amin(dim=1).T.contiguous()  # [width, q]
    first = torch.topk(minima, m, dim=1, largest=False, sorted=False).indices
    picked = main.gather(0, first.T[:, None, :].expand(m, _COL_GROUP, width)).view(-1, width)
    picked = torch.cat([picked, dist[q * _COL_GROUP :]]).T.contiguous()
    values, at = torch.topk(picked, m, dim=1, largest=False, sorted=False)
    grouped = first.gather(1, (at // _COL_GROUP).clamp_max(m - 1)) * _COL_GROUP + at % _COL_GROUP
    return values, torch.where(at < _COL_GROUP * m, grouped, at + (q - m) * _COL_GROUP)


def _radii_sq(rows: _Rows, k: int, block: int, bounds: _Bounds) -> torch.Tensor:
    """Squared k-NN radii of ``rows`` (input units), equal to the float64 definition's within
    its own rounding (``2ε``): which rows are the k+1 nearest is decided in float32 and
    certified by the bound, the radius itself recomputed in float64."""
    n, device = rows.n, rows.x.device
    m = min(k + 1 + _EXTRA, n)
    vals = torch.full((n, m), math.inf, dtype=torch.float32, device=device)
    index = torch.zeros((n, m), dtype=torch.int64, device=device)

    def merge(at: slice, new_vals: torch.Tensor, new_index: torch.Tensor) -> None:
        both = torch.cat([vals[at], new_vals], dim=1)
        kept, where = torch.topk(both, m, dim=1, largest=False, sorted=False)
        index[at] = torch.cat([index[at], new_index], dim=1).gather(1, where)
        vals[at] = kept

    # Panels [I, J ≥ I] of the symmetric distance matrix: each serves the rows of I and, read
    # down its columns after the diagonal block, the later rows (half the matmuls of whole
    # rows; memory O(block · n)). One buffer for all panels: no page faults per panel.
    buf = torch.empty(min(block, n) * n, dtype=torch.float32, device=device)
    for i0 in range(0, n, block):
        i1 = min(i0 + block, n)
        panel = buf[: (i1 - i0) * (n - i0)].view(i1 - i0, n - i0)
        dist = torch.mm(rows.left[i0:i1], rows.right[i0:].T, out=panel)
        dist.diagonal().fill_(0.0)  # the row itself, as in the float64 definition
        values, cols = _row_smallest(dist, m)
        merge(slice(i0, i1), values, cols + i0)
        if i1 < n:
            values, cols = _col_smallest(dist[:, i1 - i0 :], m)
            merge(slice(i1, n), values, cols + i0)
    del buf, panel, dist  # free the panel before any float64 rows below

    vals, order = vals.sort(dim=1)
    index = index.gather(1, order)
    kth = vals[:, k].double()
    wide = vals.double()
    # The float64 radius r satisfies |r − kth| ≤ δ, so a float32 value below kth − 2δ is surely
    # nearer than the radius, one above kth + 2δ surely farther; only the band in between needs
    # float64. A row whose m kept values all fall below kth + 2δ may have lost band members.
    below = wide < kth[:, None] - 2.0 * bounds.delta
    band = ~below & (wide <= kth[:, None] + 2.0 * bounds.delta)
    overflow = band[:, -1].clone() if m < n else torch.zeros(n, dtype=torch.bool, device=device)
    if int(overflow.sum()) > n // 8 + 1:
        raise _Uncertain
    band &= ~overflow[:, None]
    row, slot = torch.nonzero(band, as_tuple=True)
    col = index[row, slot]
    exact = torch.full((n, m), math.inf, dtype=torch.float64, device=device)
    exact[row, slot] = torch.where(row == col, 0.0, _pair_sq(rows, row, rows, col))
    rank = k - below.sum(dim=1)  # below-band rows are among the k nearer than the radius
    radii = exact.sort(dim=1).values.gather(1, rank.clamp_min(0)[:, None])[:, 0]
    for start in range(0, int(overflow.sum()), block):  # rare: whole rows in float64
        where = torch.nonzero(overflow).flatten()[start : start + block]
        d2 = sq_dists(rows.x[where], rows.x, rows.sq[where], rows.sq)
        d2[torch.arange(where.numel(), device=device), where] = 0.0
        radii[where] = torch.topk(d2, k + 1, dim=1, largest=False).values[:, k]
    return radii


def _round_down(x: torch.Tensor) -> torch.Tensor:
    y = x.float()
    return torch.where(y.double() > x, torch.nextafter(y, y.new_tensor(-math.inf)), y)


def _round_up(x: torch.Tensor) -> torch.Tensor:
    y = x.float()
    return torch.where(y.double() < x, torch.nextafter(y, y.new_tensor(math.inf)), y)


def fast_radii_sq(x: torch.Tensor, k: int, block: int) -> torch.Tensor | None:
    """Squared k-NN radii of the float64 rows ``x`` (``n > k``), or ``None`` where the float32
    bound cannot certify them; equal to the float64 definition up to its own rounding.

    Not behind :func:`~synthguard.functional.knn_radii`, which returns the float64 values
    bit for bit (these differ in the last bits); about 1.5× faster at 10,000 × 512.
    """
    if not ieee_float32_matmul(x.device):
        return None
    try:
        (rows,), bounds = _prepare([x])
        return _radii_sq(rows, k, min(block, _MAX_BLOCK), bounds)
    except _Uncertain:
        return None


def fast_prdc(
    real: torch.Tensor, fake: torch.Tensor, k: int, block: int, tie_rtol: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """``(real balls per fake, recalled reals, covered reals)`` as the float64 definition
    decides them, or ``None`` where the float32 bound cannot certify every decision."""
    if not ieee_float32_matmul(real.device):
        return None
    try:
        return _prdc(real, fake, k, min(block, _MAX_BLOCK), tie_rtol)
    except _Uncertain:
        return None


def _prdc(
    real_x: torch.Tensor, fake_x: torch.Tensor, k: int, block: int, tie_rtol: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    (real, fake), bounds = _prepare([real_x, fake_x])
    radii_real, radii_fake = _radii_sq(real, k, block, bounds), _radii_sq(fake, k, block, bounds)
    tie_tol = tie_rtol * float(real.sq.max() + fake.sq.max())
    thr_real, thr_fake = radii_real - tie_tol, radii_fake - tie_tol  # as the float64 path
    # Our radii are within 2ε of the float64 path's; so are our recomputed distances of its
    # distances. A float64 decision closer than `margin` to its threshold is not certified.
    top = float(torch.cat([thr_real, thr_fake]).abs().max())
    margin = 2.0 * bounds.eps + 4.0 * _U64 * top
    reach = bounds.delta + margin * bounds.scale_sq  # the float32 band, scaled units
    lo_real = _round_down(thr_real * bounds.scale_sq - reach)
    hi_real = _round_up(thr_real * bounds.scale_sq + reach)
    lo_fake = _round_down(thr_fake * bounds.scale_sq - reach)
    hi_fake = _round_up(thr_fake * bounds.scale_sq + reach)
    width_fake = float((hi_fake - lo_fake).max())  # float32, rounded as the row minima are

    device, n_real, n_fake = real_x.device, real.n, fake.n
    inside = torch.zeros(n_fake, dtype=torch.int64, device=device)  # real balls per fake
    recalled = torch.zeros(n_real, dtype=torch.bool, device=device)
    covered = torch.zeros_like(recalled)
    budget = max(n_real * n_fake // 16, 4096)  # uncertain pairs before float64 is cheaper
    bufs = torch.empty((2, min(block, n_real), n_fake), dtype=torch.float32, device=device)
    for start in range(0, n_real, block):
        stop = min(start + block, n_real)
        # [b, n_fake] scaled squared distances, into reused buffers (no page faults)
        dist = torch.mm(real.left[start:stop], fake.right.T, out=bufs[0, : stop - start])
        flags = bufs[1, : stop - start]
        lo, hi = lo_real[start:stop, None], hi_real[start:stop, None]
        surely = torch.lt(dist, lo, out=flags).sum(dim=0)  # surely inside, per fake
        covered[start:stop] = flags.amax(dim=1) > 0
        maybe = torch.lt(dist, hi, out=flags).sum(dim=0)
        inside += surely.long()
        # Pairs in the band of a real ball: columns whose two counts differ hold them.
        cols = torch.nonzero(maybe != surely).flatten()
        sub = dist[:, cols]
        r, c = torch.nonzero((sub >= lo) & (sub < hi), as_tuple=True)
        ball_real, ball_fake = r + start, cols[c]
        # Recall: a real row is surely recalled when some distance is below the fake's lower
        # bound; rows whose least margin is within the band width need their pairs looked at.
        least = torch.sub(dist, lo_fake, out=flags).amin(dim=1)
        recalled[start:stop] = least < 0
        rows = torch.nonzero((least >= 0) & (least <= width_fake)).flatten()
        sub = dist[rows]
        r, c = torch.nonzero((sub >= lo_fake) & (sub < hi_fake), as_tuple=True)
        rec_real, rec_fake = rows[r] + start, c
        budget -= ball_real.numel() + rec_real.numel()
        if budget < 0:
            raise _Uncertain
        # Float64 for the pairs in a band, decided as the float64 path would.
        d2 = _pair_sq(real, ball_real, fake, ball_fake)
        held = _decide(d2, thr_real[ball_real], margin)
        inside.index_add_(0, ball_fake, held.long())
        covered.index_fill_(0, ball_real[held], True)
        d2 = _pair_sq(real, rec_real, fake, rec_fake)
        recalled.index_fill_(0, rec_real[_decide(d2, thr_fake[rec_fake], margin)], True)
    return inside, recalled, covered


def _decide(d2: torch.Tensor, threshold: torch.Tensor, margin: float) -> torch.Tensor:
    """``d2 < threshold`` where it is certain whatever the float64 path's rounding."""
    if bool(((d2 - threshold).abs() <= margin).any()):
        raise _Uncertain
    return d2 < threshold
