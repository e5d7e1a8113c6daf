"""The k nearest discrete IRS actions to a continuous proto-action (P1 Alg. 2, line 3).

A discrete low-level IRS action at resolution b is x = (phase_idx, on): per element a point
of the b-bit grid F_b (P1 eq. 6) and an ON/OFF bit. A proto-action is e = (u, w) with 2N
real entries: u_n the phase in *turns* (theta / 2 pi, any real value, wrapped) and w_n an
ON score (1 = ON).

Metric (the project's choice; the paper only writes ||x - x_hat||^2):

    d^2(x, e) = sum_n [ circ(u_n - phase_idx_n / 2^b)^2 + (w_n - on_n)^2 ],
    circ(t) = t - round(t)   (signed distance on the unit circle, in turns, |circ| <= 1/2)

Both parts are in "fraction of the full range" units (a half turn of phase weighs as much
as half an ON/OFF flip), and the phase part is circular, so 0 and 2^b - 1 are neighbours.

Because d^2 is a sum of independent per-coordinate costs (2N coordinates: N phases, N ON
bits), the nearest action is found per element by rounding, and the k nearest differ from
it only in the coordinates whose second-best option costs least (the smallest rounding
margins): a coordinate whose cheapest change is not among the k - 1 cheapest changes over
all coordinates cannot appear in the k best (each of those k - 1 single changes is already
cheaper). The exact k best combinations of the selected coordinates come from a top-k
dynamic program over them (k rounds of a batched top-k). Cost per row:
O(N 2^b_max + k^2 2^b_max), never the 2^(bN) of enumerating the action set.

The search runs in float64 numpy (``_k_nearest_np``): it is index bookkeeping over tiny
arrays, where torch's per-op dispatch cost (~5-10 us x ~60 ops) dominated a single decision;
numpy does the same operations several times faster. Rows go first through the rank-space
search of ``agents.runtime.kbest`` (closed-form option costs, a dominance table fixed in
advance, one gather and one sort per row, or per batch from 8 rows), which accepts a row only when its k
best and their order are unambiguous; the other rows (near-ties, e.g. saturated
proto-actions) take the merge above (``_k_nearest_merge_np``), whose stable sorts define
the order at ties. Both give the same neighbours in the same order. The torch version
(``_k_nearest_torch``) is kept as the reference the tests compare against.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass

import numpy as np
import torch

from agents.runtime.kbest import RankSpace
from twin.errors import ConfigError


@dataclass(frozen=True)
class Neighbours:
    """The k nearest discrete actions per row, nearest first.

    phase_idx (B, k, N) long, on (B, k, N) bool, dist2 (B, k) float64 squared distances,
    valid (B, k) bool: False where the action set has fewer than k members (those rows
    repeat the nearest action with dist2 = inf).
    """

    phase_idx: torch.Tensor
    on: torch.Tensor
    dist2: torch.Tensor
    valid: torch.Tensor


def _option_costs(u: torch.Tensor, w: torch.Tensor, bits: torch.Tensor, max_bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-coordinate option costs (B, 2N, R) and option values (B, 2N, R), R = 2^max_bits.

    Coordinates 0..N-1 are phases (value = grid index), N..2N-1 ON bits (value 0/1).
    Options that do not exist (index >= 2^b, ON value >= 2) cost +inf.
    """
    B, N = u.shape
    R = max(1 << max_bits, 2)
    grid = torch.arange(R, dtype=torch.float64, device=u.device)                  # (R,)
    levels = torch.pow(2.0, bits.to(torch.float64)).view(B, 1, 1)                  # (B,1,1)
    diff = u.to(torch.float64).unsqueeze(-1) - grid / levels                       # (B,N,R)
    phase_cost = (diff - torch.round(diff)).square()
    phase_cost = phase_cost.masked_fill(grid.view(1, 1, R) >= levels, float("inf"))
    on_cost = (w.to(torch.float64).unsqueeze(-1) - grid.view(1, 1, R)).square()
    on_cost = on_cost.masked_fill(grid.view(1, 1, R) >= 2, float("inf"))
    costs = torch.cat([phase_cost, on_cost], dim=1)                                # (B,2N,R)
    values = torch.arange(R, device=u.device).expand(B, 2 * N, R)
    return costs, values


@functools.lru_cache(maxsize=256)
def _pairs(wa: int, wb: int, k: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Index pairs (i, j) into two ascending lists that can hold one of the k smallest sums."""
    pairs = [(i, j) for i in range(wa) for j in range(wb) if (i + 1) * (j + 1) <= k]
    t = torch.tensor(pairs, dtype=torch.long, device=device)
    return t[:, 0], t[:, 1]


def _k_best_combinations(delta: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k smallest sums picking one option per coordinate, and the options picked.

    delta (B, C, r): per coordinate the extra cost of its options, ascending, delta[..., 0] = 0.
    Exact top-k by pairwise merging: two groups' sorted top-k lists combine into the top k of
    their sums (any top-k combination restricted to a group is in that group's top k), so
    log2(C) rounds of a batched top-k suffice. Only pairs (i, j) with (i+1)(j+1) <= k can
    make the top k (each is beaten by every pair (i' <= i, j' <= j)), about k ln k of them. Returns sums (B, S) ascending and the chosen
    option per coordinate (B, S, C), S = min(k, number of combinations).
    """
    B, C, r = delta.shape
    width = 1 << max(0, (C - 1).bit_length())          # pad to a power of two with no-op coordinates
    if width > C:
        pad = delta.new_full((B, width - C, r), float("inf"))
        pad[..., 0] = 0.0
        delta = torch.cat([delta, pad], 1)
    sums = delta                                                                 # (B, G, W)
    choice = torch.arange(r, device=delta.device).view(1, 1, r, 1).expand(B, width, r, 1)  # (B, G, W, g)
    while sums.shape[1] > 1:
        a, b = sums[:, 0::2], sums[:, 1::2]
        ca, cb = choice[:, 0::2], choice[:, 1::2]
        pa, pb = _pairs(a.shape[-1], b.shape[-1], k, delta.device)
        cand = a[..., pa] + b[..., pb]                                           # (B, G/2, P)
        keep = min(k, cand.shape[-1])
        sums, flat = torch.topk(cand, keep, dim=-1, largest=False, sorted=True)
        ia, ib = pa[flat], pb[flat]
        g = ca.shape[-1]
        choice = torch.cat([ca.gather(2, ia.unsqueeze(-1).expand(-1, -1, -1, g)),
                            cb.gather(2, ib.unsqueeze(-1).expand(-1, -1, -1, g))], -1)
    return sums[:, 0], choice[:, 0, :, :C]


def k_nearest(u: torch.Tensor, w: torch.Tensor, bits: torch.Tensor, k: int, max_bits: int | None = None) -> Neighbours:
    """The k discrete actions nearest to the proto-action (u, w) at resolution ``bits``.

    u, w: (B, N) phase turns and ON scores; bits: (B,) long resolution per row.
    ``max_bits`` bounds the option table (defaults to bits.max()).
    """
    if k < 1:
        raise ConfigError(f"k: the number of nearest neighbours must be >= 1, got {k}")
    if u.shape != w.shape or u.dim() != 2 or bits.shape != u.shape[:1]:
        raise ConfigError(f"k_nearest: expected u, w (B, N) and bits (B,), got {tuple(u.shape)}, "
                          f"{tuple(w.shape)}, {tuple(bits.shape)}")
    max_bits = int(bits.max()) if max_bits is None else int(max_bits)
    idx, on, d2, valid = _k_nearest_np(u.detach().cpu().numpy().astype(np.float64),
                                       w.detach().cpu().numpy().astype(np.float64),
                                       bits.detach().cpu().numpy().astype(np.int64), int(k), max_bits)
    dev = u.device
    return Neighbours(phase_idx=torch.from_numpy(idx).to(dev), on=torch.from_numpy(on).to(dev),
                      dist2=torch.from_numpy(d2).to(dev), valid=torch.from_numpy(valid).to(dev))


@functools.lru_cache(maxsize=256)
def _pairs_np(wa: int, wb: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    ia, ib = np.meshgrid(np.arange(wa), np.arange(wb), indexing="ij")
    keep = (ia + 1) * (ib + 1) <= k
    return ia[keep], ib[keep]


def _k_best_np(delta: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``_k_best_combinations`` in numpy: sums (B, S) ascending, options (B, S, C).

    Groups are kept as rows of 2-D arrays and gathered by plain fancy indexing (numpy's
    take_along_axis costs ~10 us of Python per call, more than the arithmetic here)."""
    B, C, r = delta.shape
    width = 1 << max(0, (C - 1).bit_length())
    if width > C:
        pad = np.full((B, width - C, r), np.inf)
        pad[..., 0] = 0.0
        delta = np.concatenate([delta, pad], 1)
    G = width
    sums = delta.reshape(B * G, r)                                                # one row per group
    choice = np.broadcast_to(np.arange(r).reshape(1, r, 1), (B * G, r, 1))       # (rows, W, g)
    while G > 1:
        a, b = sums[0::2], sums[1::2]            # groups 2j and 2j+1 (rows are (env, group) row-major, G even)
        ca, cb = choice[0::2], choice[1::2]
        pa, pb = _pairs_np(a.shape[-1], b.shape[-1], k)
        cand = a[:, pa] + b[:, pb]                                                # (rows/2, P)
        rows = np.arange(cand.shape[0])[:, None]
        flat = np.argsort(cand, -1, kind="stable")[:, :k]     # P <= ~k ln k: a full sort is cheapest
        sums = cand[rows, flat]
        choice = np.concatenate([ca[rows, pa[flat]], cb[rows, pb[flat]]], -1)
        G //= 2
    return sums, choice[..., :C]


_LOCAL = threading.local()


def _rank_space(n: int, k: int, max_bits: int) -> RankSpace:
    """One RankSpace per shape and thread (its one-row search reuses buffers)."""
    cache = _LOCAL.__dict__.setdefault("rank_spaces", {})
    rs = cache.get((n, k, max_bits))
    if rs is None:
        rs = cache[(n, k, max_bits)] = RankSpace(n, k, max_bits)
    return rs


def _k_nearest_np(u: np.ndarray, w: np.ndarray, bits: np.ndarray, k: int, max_bits: int
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``k_nearest`` on float64 arrays: (phase_idx (B,k,N) int64, on (B,k,N) bool, dist2 (B,k),
    valid (B,k)). The rank-space search for the rows it accepts, the merge for the others."""
    B, N = u.shape
    if k == 1 or B == 0:
        return _k_nearest_merge_np(u, w, bits, k, max_bits)
    rs = _rank_space(N, k, max_bits)
    if B >= 8:                           # one pass over the batch (about twice as fast per row at B = 128)
        acts, d2, ok = rs.batch(u, w, bits)
    else:                                # row by row (~30 us a row)
        acts, d2, ok = np.empty((B, k, 2 * N), dtype=np.int64), np.empty((B, k)), np.ones(B, dtype=bool)
        e = np.concatenate([u, w], 1)
        for i in range(B):
            got = rs.row(e[i], int(bits[i]))
            if got is None:
                ok[i] = False
            else:
                acts[i], d2[i] = got
    valid = np.ones((B, k), dtype=bool)
    if not ok.all():
        bad = np.nonzero(~ok)[0]
        idx, on, d2[bad], valid[bad] = _k_nearest_merge_np(u[bad], w[bad], bits[bad], k, max_bits)
        acts[bad, :, :N], acts[bad, :, N:] = idx, on
    return acts[..., :N], acts[..., N:].astype(bool), d2, valid


def _k_nearest_merge_np(u: np.ndarray, w: np.ndarray, bits: np.ndarray, k: int, max_bits: int
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The search of ``_k_nearest_torch`` (same steps, see the module docstring) on float64 arrays."""
    B, N = u.shape
    R = max(1 << max_bits, 2)
    grid = np.arange(R, dtype=np.float64)
    levels = np.power(2.0, bits.astype(np.float64)).reshape(B, 1, 1)
    diff = u[..., None] - grid / levels                                          # (B,N,R)
    costs = np.empty((B, 2 * N, R))
    costs[:, :N] = np.where(grid >= levels, np.inf, np.square(diff - np.round(diff)))
    costs[:, N:] = np.square(w[..., None] - grid)
    costs[:, N:, 2:] = np.inf
    r = min(R, k)
    order = np.argsort(costs, -1, kind="stable")[..., :r]                        # option values, cheapest first
    bi = np.arange(B)[:, None]                                                   # plain fancy indexing below:
    sorted_cost = costs[bi[..., None], np.arange(2 * N)[:, None], order]         # take_along_axis is slower
    base = sorted_cost[..., 0].sum(-1)
    kc = min(k - 1, 2 * N)
    if kc > 0:
        delta = sorted_cost - sorted_cost[..., :1]
        # Tighter exact pruning than the torch version: the k-1 cheapest single changes
        # already give k actions within extra cost T (the (k-1)-th cheapest single change),
        # so a coordinate whose margin, or an option whose change, costs more than T never
        # enters the k best. Fewer coordinates = fewer merge rounds, fewer options = smaller ones.
        singles = delta[..., 1:].reshape(B, -1)
        T = (np.partition(singles, k - 2, axis=-1)[:, k - 2] if k - 1 <= singles.shape[1]
             else np.full(B, np.inf))[:, None]
        kc = max(1, int((delta[..., 1] <= T).sum(-1).max()))
        r2 = max(2, int((delta <= T[..., None]).sum(-1).max()))
        coords = np.argsort(delta[..., 1], -1, kind="stable")[:, :kc]            # smallest rounding margins
        extra, choice = _k_best_np(delta[bi, coords][..., :r2], k)               # (B,S), (B,S,kc)
        S = extra.shape[1]
        sums = base[:, None] + extra
        acts = np.repeat(order[:, None, :, 0], S, 1)                             # (B,S,2N): the rounding
        sel = order[bi, coords][..., :r2]                                        # (B,kc,r2)
        chosen = sel[bi[..., None], np.arange(kc), choice]                       # (B,S,kc)
        acts[bi[..., None], np.arange(S)[:, None], coords[:, None]] = chosen
    else:
        sums, acts = base[:, None], order[:, None, :, 0]
    S = sums.shape[1]
    if S < k:
        sums = np.concatenate([sums, np.full((B, k - S), np.inf)], 1)
        acts = np.concatenate([acts, np.repeat(acts[:, :1], k - S, 1)], 1)
    valid = np.isfinite(sums)
    acts = np.where(valid[..., None], acts, acts[:, :1])
    return acts[..., :N].astype(np.int64), acts[..., N:].astype(bool), sums, valid


def _k_nearest_torch(u: torch.Tensor, w: torch.Tensor, bits: torch.Tensor, k: int, max_bits: int | None = None) -> Neighbours:
    """The torch implementation of ``k_nearest`` (reference for the numpy one; same result)."""
    B, N = u.shape
    max_bits = int(bits.max()) if max_bits is None else int(max_bits)
    costs, values = _option_costs(u, w, bits, max_bits)
    R = costs.shape[-1]
    r = min(R, k)                                        # no coordinate changes more than k-1 times
    sorted_cost, order = torch.topk(costs, r, dim=-1, largest=False, sorted=True)  # (B,2N,r)
    sorted_vals = torch.gather(values, -1, order)
    best_vals = sorted_vals[..., 0]                      # the rounding: nearest per coordinate
    base = sorted_cost[..., 0].sum(-1)                   # (B,) d^2 of the nearest action
    delta = sorted_cost - sorted_cost[..., :1]           # (B,2N,r) extra cost of each change

    sums = base.unsqueeze(-1)                            # (B,1) candidate totals
    kc = min(k - 1, 2 * N)
    if kc > 0:
        # Coordinates with the smallest rounding margins (cheapest single change).
        margin = delta[..., 1] if r > 1 else torch.full_like(delta[..., 0], float("inf"))
        coords = torch.topk(margin, kc, dim=-1, largest=False, sorted=True).indices  # (B,kc)
        cdelta = torch.gather(delta, 1, coords.unsqueeze(-1).expand(B, kc, r))       # (B,kc,r)
        extra, choice = _k_best_combinations(cdelta, k)                               # (B,S), (B,S,kc)
        sums = base.unsqueeze(-1) + extra
        # Values: the rounding, with the chosen option on each selected coordinate.
        acts = best_vals.unsqueeze(1).expand(B, sums.shape[1], 2 * N).clone()       # (B,S,2N)
        sel_vals = torch.gather(sorted_vals, 1, coords.unsqueeze(-1).expand(B, kc, r))  # (B,kc,r)
        chosen = torch.gather(sel_vals.unsqueeze(1).expand(B, sums.shape[1], kc, r), -1,
                              choice.unsqueeze(-1)).squeeze(-1)                      # (B,S,kc)
        acts.scatter_(2, coords.unsqueeze(1).expand(B, sums.shape[1], kc), chosen)
    else:
        acts = best_vals.unsqueeze(1)
    S = sums.shape[1]
    if S < k:                                            # pad (only when 2N options are too few)
        pad = k - S
        sums = torch.cat([sums, sums.new_full((B, pad), float("inf"))], 1)
        acts = torch.cat([acts, acts[:, :1].expand(B, pad, 2 * N)], 1)
    valid = torch.isfinite(sums)
    acts = torch.where(valid.unsqueeze(-1), acts, acts[:, :1].expand_as(acts))
    return Neighbours(phase_idx=acts[..., :N].long(), on=acts[..., N:].bool(), dist2=sums, valid=valid)


def nearest(u: torch.Tensor, w: torch.Tensor, bits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The single nearest action (k = 1), i.e. per-element rounding: (phase_idx (B,N), on (B,N))."""
    levels = torch.pow(2.0, bits.to(torch.float64)).unsqueeze(-1)
    idx = torch.remainder(torch.round(u.to(torch.float64) * levels), levels).long()
    return idx, w > 0.5


def nearest_np(u: np.ndarray, w: np.ndarray, bits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``nearest`` on numpy arrays (the execution path of agents.maq)."""
    levels = np.power(2.0, bits.astype(np.float64))[:, None]
    idx = np.remainder(np.round(u.astype(np.float64) * levels), levels).astype(np.int64)
    return idx, w > 0.5


def embed(phase_idx: torch.Tensor, on: torch.Tensor, bits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A discrete action as a point of the proto-action space: (u turns, w) float32."""
    levels = torch.pow(2.0, bits.float()).view(*bits.shape, *([1] * (phase_idx.dim() - bits.dim())))
    return phase_idx.float() / levels, on.float()
