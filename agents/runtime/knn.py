"""MAQ-WP's execution step in numpy, tuned for one observation: the k nearest discrete IRS
actions to a proto-action, ranked by the agent's Q_low network (P1 Alg. 2, lines 3-4).

Two paths, both exact (metric and definitions in ``agents.knn``):

- fast (``agents.runtime.kbest.RankSpace.row``): closed-form option costs, a dominance
  table fixed in advance, one gather and one sort; accepted only when the k best and their
  order are unambiguous (no near-ties), hence ``agents.knn``'s.
- tie-exact (when they are not, e.g. saturated proto-actions give exact distance ties at
  the k-th neighbour): ``agents.knn``'s pairwise top-k merge, rewritten for one row with
  exact pruning, performing the same float64 operations in the same order, so the k best
  and their order are ``agents.knn``'s at every tie (tested bit for bit).

Either way the candidates, their order and therefore the action chosen by Q_low equal the
torch actor's (``agents.maq.MAQIRSActor``, whose forward calls ``agents.knn``). Caches hold
what does not depend on the observation: the dominance tables, merge index tables, the Q
network's input buffer, cos / sin tables of the phase encoding. Batches (B > 1) run row by row.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np

from agents.runtime.kbest import RankSpace
from agents.runtime.lowq import FastLowQ, relu_stack

F32 = np.float32
TWO_PI = 2.0 * math.pi


_HUGE = float(np.finfo(np.float64).max)


class KNNSearch:
    """k nearest discrete actions for one proto-action row (see the module docstring): the
    rank-space search (``self.rank``) when it accepts the row, else the tie-exact merge.

    The merge takes two exact shortcuts over ``agents.knn`` that leave the result bit-identical:
    - a tighter threshold T: the k-1 cheapest among single changes *and pairs of single
      changes on two coordinates* are k-1 distinct actions within extra cost T, so nothing
      costlier than T can enter the k best (agents.knn uses singles only, and T = inf when
      there are fewer than k-1 of them, e.g. 1-bit phases);
    - every merge keeps only entries <= T (the sorted lists are cut to the longest prefix
      <= T over the groups): partial sums only grow, so a dropped entry is > T in every
      combination it could form.
    Entries <= T keep their values (additions of 0.0 are exact) and their relative order in
    every stable sort (the pair tables are prefixes of agents.knn's), so the k best, their
    order and their float64 distances are those of agents.knn at every tie.
    """

    def __init__(self, n: int, k: int, max_bits: int) -> None:
        self.n, self.k, self.max_bits = int(n), int(k), int(max_bits)
        self.R = max(1 << self.max_bits, 2)
        N, R = self.n, self.R
        self.grid = np.arange(R, dtype=np.float64)
        self.costs = np.full((1, 2 * N, R), np.inf)
        self._bits = -1
        self.row_off = (np.arange(2 * N) * R)[:, None]                 # flat gather offsets
        self.iu = np.triu_indices(2 * N, 1)                             # coordinate pairs
        self._phase: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._pairs: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
        self._rows: dict[int, np.ndarray] = {}
        self._pads: dict[tuple[int, int], np.ndarray] = {}
        self._choice0: dict[tuple[int, int], np.ndarray] = {}
        self._valid = np.ones(self.k, dtype=bool)
        self.rank = RankSpace(self.n, self.k, self.max_bits) if self.k > 1 else None
        self.fast = True

    def _phase_tables(self, bits: int) -> tuple[np.ndarray, np.ndarray]:
        t = self._phase.get(bits)
        if t is None:
            levels = np.power(2.0, np.float64(bits))
            t = (self.grid / levels, self.grid >= levels)
            self._phase[bits] = t
        return t

    def __call__(self, u: np.ndarray, w: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """u, w: (N,) float64; bits: int -> acts (k, 2N) int64 option values (phase index,
        then ON), squared distances (k,) ascending, valid (k,) (False: fewer than k actions)."""
        if self.k > 1 and self.fast:
            got = self.rank.row(np.concatenate([u, w]), int(bits))
            if got is not None:
                return got[0], got[1], self._valid
        return self.exact(u, w, bits)

    def exact(self, u: np.ndarray, w: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The tie-exact merge (``__call__``'s contract), bit for bit agents.knn's."""
        N, R, k = self.n, self.R, self.k
        bits = int(bits)
        grid_over_levels = self._phase_tables(bits)[0][:1 << bits]              # the grid F_b in turns
        costs = self.costs          # options beyond 2^b (phases) and 2 (ON) stay +inf
        if bits != self._bits:
            costs[0, :N, 1 << bits:] = np.inf
            self._bits = bits
        diff = u[:, None] - grid_over_levels                                    # (N, 2^b)
        costs[0, :N, :1 << bits] = np.square(diff - np.round(diff))
        costs[0, N:, :2] = np.square(w[:, None] - self.grid[:2])
        c2 = costs[0]
        r = min(R, k)
        order = np.argsort(c2, -1, kind="stable")[:, :r]                         # (2N, r)
        sorted_cost = c2.reshape(-1)[order + self.row_off]                      # (2N, r)
        base = sorted_cost[None, :, 0].sum(-1)                                   # (1,), as agents.knn sums
        if k > 1:
            delta = sorted_cost - sorted_cost[:, :1]
            m1 = delta[:, 1]
            cheap = np.concatenate([delta[:, 1:].reshape(-1), m1[self.iu[0]] + m1[self.iu[1]]])
            cheap = cheap[np.isfinite(cheap)]
            T = np.partition(cheap, k - 2)[k - 2] if cheap.size >= k - 1 else _HUGE
            coords = np.argsort(m1, kind="stable")
            kc = int(np.count_nonzero(m1 <= T))
            coords = coords[:kc]
            dsel = delta[coords]
            r2 = int(np.count_nonzero(dsel <= T, axis=-1).max())
            extra, choice = self._k_best(dsel[:, :r2], kc, r2, T)                # (S,), (S, kc)
            S = extra.shape[0]
            sums = base + extra
            acts = np.repeat(order[None, :, 0], S, 0)                             # (S, 2N)
            acts[:, coords] = order[coords[:, None], choice.T].T                  # chosen options
        else:
            sums, acts = base, order[None, :, 0]
        S = sums.shape[0]
        if S < k:
            sums = np.concatenate([sums, np.full(k - S, np.inf)])
            acts = np.concatenate([acts, np.repeat(acts[:1], k - S, 0)])
        valid = np.isfinite(sums)
        if not valid.all():
            acts = np.where(valid[:, None], acts, acts[:1])
        return acts, sums, valid

    def _pair_table(self, wa: int, wb: int) -> tuple[np.ndarray, np.ndarray]:
        t = self._pairs.get((wa, wb))
        if t is None:
            ia, ib = np.meshgrid(np.arange(wa), np.arange(wb), indexing="ij")
            keep = (ia + 1) * (ib + 1) <= self.k
            t = self._pairs[(wa, wb)] = (ia[keep], ib[keep])
        return t

    def _k_best(self, delta: np.ndarray, C: int, r2: int, T: float) -> tuple[np.ndarray, np.ndarray]:
        """agents.knn._k_best_np for one row, lists cut to their entries <= T: the smallest
        sums over C coordinates (each (r2,) ascending from 0), at most k of them, and the
        option picked per coordinate (S, C)."""
        width = 1 << max(0, (C - 1).bit_length())
        if width > C:
            pad = self._pads.get((width - C, r2))
            if pad is None:
                pad = np.full((width - C, r2), np.inf)
                pad[:, 0] = 0.0
                self._pads[(width - C, r2)] = pad
            delta = np.concatenate([delta, pad], 0)
        choice = self._choice0.get((width, r2))
        if choice is None:
            choice = self._choice0[(width, r2)] = np.broadcast_to(np.arange(r2).reshape(1, r2, 1), (width, r2, 1))
        sums = delta                                                              # (G, W)
        k, G = self.k, width
        while G > 1:
            W = sums.shape[1]
            pa, pb = self._pair_table(W, W)
            cand = sums[0::2][:, pa] + sums[1::2][:, pb]                          # (G/2, P)
            flat = np.argsort(cand, -1, kind="stable")
            G //= 2
            rows = self._rows.get(G)
            if rows is None:
                rows = self._rows[G] = np.arange(G)[:, None]
            keep = min(k, max(1, int(np.count_nonzero(cand <= T, axis=-1).max())))
            flat = flat[:, :keep]
            sums = cand[rows, flat]
            choice = np.concatenate([choice[0::2][rows, pa[flat]], choice[1::2][rows, pb[flat]]], -1)
        return sums[0], choice[0, :, :C]


class KNNRanker:
    """MAQ-WP's mapping at execution: proto-action e (B, 2N) in [0, 1] -> (phase_idx (B, N)
    int64, on (B, N) bool): the k nearest actions at resolution ``bits`` (B,), the one with the
    largest Q_low(ctx, encode(x)) (``q_net`` maps (B, k, ctx + 3N) -> (B, k, 1)).

    Q_low is evaluated by ``agents.runtime.lowq.FastLowQ`` when ``q_net`` is a ReLU MLP; it
    answers only when its argmax is certain to be the straightforward evaluation's
    (``best_straight``, the reference), which runs otherwise (near-ties in Q_low)."""

    def __init__(self, n: int, k: int, max_bits: int, q_net: Callable[[np.ndarray], np.ndarray],
                 unit: bool = False) -> None:
        self.n, self.k, self.max_bits, self.q_net = int(n), int(k), int(max_bits), q_net
        self.unit = bool(unit)      # e is a sigmoid's output: w in [0, 1] without checking
        self.search = KNNSearch(n, k, max_bits)
        self._buf: dict[int, np.ndarray] = {}
        self._trig_tabs: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._trig_flats: dict[int, np.ndarray] = {}
        R = max(1 << self.max_bits, 2)
        self._cs_src = np.r_[np.arange(self.n), np.arange(self.n)].astype(np.intp)      # phase of each cos / sin column
        self._cs_off = np.r_[np.zeros(self.n), np.full(self.n, R)].astype(np.int64)
        layers = relu_stack(getattr(q_net, "spec", ()))
        self.fast_q = FastLowQ(layers, n, k, max_bits) if layers is not None and self.k > 1 else None
        self.tries = 0              # decisions FastLowQ was asked
        self.fallbacks = 0          # ... and left to best_straight (a lead within its error bound)

    def _trig(self, b: int) -> np.ndarray:
        """(R, 2) cos / sin of 2 pi i / 2^b for every phase index i, computed with the float32
        operations of agents.maq's encoding (u = i / 2^b, then 2 pi u), so a table lookup
        gives the same bits as computing them per candidate."""
        t = self._trig_tabs.get(b)
        if t is None:
            i = np.arange(max(1 << self.max_bits, 2))
            a = F32(TWO_PI) * (i.astype(F32) / np.power(F32(2.0), F32(b)))
            t = self._trig_tabs[b] = np.stack([np.cos(a), np.sin(a)], 1)
        return t

    def _trig_flat(self, b: int, trig: np.ndarray) -> np.ndarray:
        t = self._trig_flats.get(b)
        if t is None:
            t = self._trig_flats[b] = np.ascontiguousarray(trig.T).reshape(-1)    # cos (R), then sin (R)
        return t

    def best_straight(self, acts: np.ndarray, b: int, ctx_row: np.ndarray, valid: np.ndarray | None) -> int:
        """The reference: [ctx, cos, sin, on] of every candidate through ``q_net`` as
        agents.maq does (same float32 operations), first argmax over the valid ones."""
        n, k = self.n, self.k
        cw = ctx_row.shape[0]
        buf = self._buf.get(cw)
        if buf is None:
            buf = self._buf[cw] = np.empty((1, k, cw + 3 * n), dtype=F32)
        buf[0, :, :cw] = ctx_row
        # cos, then sin, of every phase: one take from the flat (cos, sin) table at index
        # option value + R * (sin column); the same float32 values as trig[idx]
        codes = acts.take(self._cs_src, 1)
        codes += self._cs_off
        trig = self._trig(b)
        buf[0, :, cw:cw + 2 * n] = self._trig_flat(b, trig).take(codes, mode="clip")
        buf[0, :, cw + 2 * n:] = acts[:, n:]
        q = self.q_net(buf)[0, :, 0]
        if valid is not None and not valid.all():
            q = np.where(valid, q, -np.inf)
        return int(q.argmax())

    def best(self, acts: np.ndarray, b: int, ctx: np.ndarray, valid: np.ndarray | None) -> int:
        """Index of the candidate with the largest Q_low; ctx: (1, cw)."""
        if self.fast_q is not None:
            self.tries += 1
            i = self.fast_q.best(acts, self.fast_q.table(b, self._trig(b)), ctx, valid)
            if i is not None:
                return i
            self.fallbacks += 1
            if self.tries >= 200 and 5 * self.fallbacks > self.tries:
                # weights whose Q_low leads are often within the (worst-case) bound: the fast
                # try then costs more than it saves; evaluate straightforwardly from now on
                self.fast_q = None
        return self.best_straight(acts, b, ctx[0], valid)

    def __call__(self, e: np.ndarray, bits: np.ndarray, ctx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n, k = self.n, self.k
        B = e.shape[0]
        if k == 1:   # agents.maq: the nearest action, no ranking
            levels = np.power(2.0, bits.astype(np.float64))[:, None]
            idx = np.remainder(np.round(e[:, :n].astype(np.float64) * levels), levels).astype(np.int64)
            return idx, e[:, n:] > 0.5
        idx_out = np.empty((B, n), dtype=np.int64) if B > 1 else None
        on_out = np.empty((B, n), dtype=bool) if B > 1 else None
        rank, unit = self.search.rank, self.unit
        for i in range(B):
            b = int(bits[i])
            got = rank.row(e[i], b, unit, False) if self.search.fast else None
            if got is not None:
                acts, valid = got[0], None
            else:
                e64 = e[i].astype(np.float64)
                acts, _, valid = self.search.exact(e64[:n], e64[n:], b)
            j = self.best(acts, b, ctx[i:i + 1], valid)
            if B == 1:                  # one decision (a daemon's case): views, no copies
                return acts[j:j + 1, :n], acts[j:j + 1, n:] != 0
            idx_out[i] = acts[j, :n]
            on_out[i] = acts[j, n:] != 0
        return idx_out, on_out


def k_nearest(u: np.ndarray, w: np.ndarray, bits: np.ndarray, k: int, max_bits: int) -> Any:
    """Batched form with agents.knn._k_nearest_np's outputs (phase_idx (B,k,N), on, dist2, valid),
    row by row. Used by the tests."""
    B, N = u.shape
    s = KNNSearch(N, k, max_bits)
    out = [s(np.asarray(u[i], np.float64), np.asarray(w[i], np.float64), int(bits[i])) for i in range(B)]
    acts = np.stack([o[0] for o in out])
    return (acts[..., :N].astype(np.int64), acts[..., N:].astype(bool), np.stack([o[1] for o in out]),
            np.stack([o[2] for o in out]))
