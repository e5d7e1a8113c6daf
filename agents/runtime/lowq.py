"""MAQ-WP's Q_low over the k candidates of one decision, with fewer and cheaper numpy calls,
certified to pick the candidate the straightforward evaluation picks.

The straightforward evaluation (``agents.maq``'s and ``agents.runtime.knn.KNNRanker``'s
reference) writes [ctx, cos, sin, on] for every candidate and runs the MLP: per layer one
matrix product, one bias add and one ReLU over (k, width), plus a cos / sin gather into a
strided view. Here, per decision:

- every coordinate of a candidate is one complex64 ``take`` from a per-resolution table of
  feature pairs indexed by coordinate * 2^b + option value: (cos, sin) of a phase index,
  (on, 1) of an ON bit; viewed as float32 that is the encoding with its columns paired and
  N columns of ones (no trig, no strided writes);
- layer 1 is that (k, 4N) matrix times W1 with its rows paired the same way; the rows of
  the ones carry the candidate-independent part ctx @ W1_ctx (written once per decision)
  and the bias b1, so layer 1 is one matrix product;
- every hidden layer has one more output, a unit that is exactly 1 (weight 1 from a ones
  input, 0 elsewhere), and the next layer's bias is the weight row of that unit: each
  layer is one matrix product and one in-place ReLU over contiguous arrays; the last layer
  (one output) is a matrix-vector product.

These sums round differently from the straightforward ones (another association, the
bias inside the BLAS sum), so Q values may differ in their last bits. ``FastLowQ.best``
returns the argmax only when the best candidate leads every other by more than SAFETY x
twice a rigorous bound on the difference between *any two* float32 evaluations of the MLP
(each within ``err`` of the exact value: ``_error_bound``, a worst case over all inputs
fixed at load, then ``FastLowQ._decision_error`` with this decision's activations when
the first is not enough); otherwise it returns None and
the caller runs the straightforward evaluation. So the chosen candidate is always the one
the straightforward evaluation chooses (its first maximum), bit for bit the previous
runtime's and the torch actor's decision.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

F32 = np.float32
U32 = 2.0 ** -24              # unit roundoff of float32
SAFETY = 2.0                  # on top of the rigorous bound, against a miscount in it (the bound, not this, limits how often the fast path answers)


def _gamma(n: int) -> float:
    """gamma_n = n u / (1 - n u): |fl(sum of n products, any order, FMA or not) - exact| <=
    gamma_n * sum |products| (Higham, Accuracy and Stability of Numerical Algorithms, 3.1)."""
    return n * U32 / (1.0 - n * U32)


def relu_stack(layers: Sequence[tuple]) -> list[tuple[np.ndarray, np.ndarray]] | None:
    """[(W (in, out), b (out,))] of a Net spec linear, relu, linear, relu, ..., linear with one
    output, or None when the net has any other form (layer norms, other activations)."""
    out: list[tuple[np.ndarray, np.ndarray]] = []
    for i, layer in enumerate(layers):
        if i % 2 == 0:
            if layer[0] != "linear":
                return None
            out.append((layer[1], layer[2]))
        elif layer != ("act", "relu"):
            return None
    if not out or len(layers) % 2 == 0 or out[-1][0].shape[1] != 1:
        return None
    return out


class FastLowQ:
    """Q_low(ctx, encode(x)) for k candidates x given as option values (k, 2N) int64 (phase
    indices, then ON bits), for one decision; see the module docstring. Not thread-safe
    (per-decision buffers)."""

    def __init__(self, layers: list[tuple[np.ndarray, np.ndarray]], n: int, k: int, max_bits: int) -> None:
        N = self.n = int(n)
        self.k = int(k)
        self.R = R = max(1 << int(max_bits), 2)
        W1, b1 = layers[0]
        self.cw = cw = W1.shape[0] - 3 * N                    # ctx width (local state + resolution feature)
        if cw < 0:
            raise ValueError(f"Q_low input width {W1.shape[0]} is less than 3N = {3 * N}")
        h = W1.shape[1]
        self.W1c = np.ascontiguousarray(W1[:cw], dtype=F32)
        self.b1 = np.ascontiguousarray(b1, dtype=F32)
        # layer 1 against the paired features (cos_j, sin_j) for phases, (on_j, 1) for ON bits;
        # the ones' rows: ctx @ W1_ctx (row c1, per decision), b1 (next row, or added to c1 when
        # N = 1), zero; plus the constant unit (column h) from the first ones row
        W = np.zeros((4 * N, h + 1), dtype=F32)
        W[0:2 * N:2, :h] = W1[cw:cw + N]                       # cos_j
        W[1:2 * N:2, :h] = W1[cw + N:cw + 2 * N]               # sin_j
        W[2 * N::2, :h] = W1[cw + 2 * N:]                      # on_j
        self.c1_row = 2 * N + 1
        W[self.c1_row, h] = 1.0
        self.b1_row = 2 * N + 3 if N > 1 else None
        if self.b1_row is not None:
            W[self.b1_row, :h] = b1
        self.W1 = W
        self.c1 = W[self.c1_row:self.c1_row + 1, :h]          # (1, h) view, written per decision
        # hidden layers: [[W, 0], [b, 1]] against [a, 1]; the last layer as a vector [w; b]
        self.hidden = []
        for Wl, bl in layers[1:-1]:
            m = np.zeros((Wl.shape[0] + 1, Wl.shape[1] + 1), dtype=F32)
            m[:-1, :-1], m[-1, :-1], m[-1, -1] = Wl, bl, 1.0
            self.hidden.append(m)
        W3, b3 = layers[-1]
        self.w_out = np.ascontiguousarray(np.r_[W3[:, 0], b3], dtype=F32)
        self.H = [np.empty((self.k, Wl.shape[1] + 1), dtype=F32) for Wl, _ in layers[:-1]]
        self.coloff = (np.arange(2 * N) * R).astype(np.int64)
        self.codes = np.empty((self.k, 2 * N), dtype=np.int64)
        self.X = np.empty((self.k, 2 * N), dtype=np.complex64)
        self.Xf = self.X.view(F32)                             # (k, 4N) float32: the paired features
        self._tabs: dict[int, np.ndarray] = {}
        self.err_const, self.err_ctx = _error_bound(layers, cw)
        self.err_ctx_norm = float(np.sqrt(np.dot(self.err_ctx, self.err_ctx)))
        # for the per-decision bound (``_decision_error``), float64
        self._absW1c = np.abs(W1[:cw].astype(np.float64))
        self._A1_const = np.abs(W1[cw:].astype(np.float64)).sum(0) + np.abs(b1.astype(np.float64))
        self._g1 = _gamma(W1.shape[0] + 3)
        self._later = [(np.abs(Wl.astype(np.float64)), np.abs(bl.astype(np.float64)), _gamma(Wl.shape[0] + 2))
                       for Wl, bl in layers[1:]]

    def table(self, b: int, trig: np.ndarray) -> np.ndarray:
        """Feature pairs at resolution b, complex64 (2N * R,): per phase coordinate cos + i sin
        of every phase index (``trig`` (R, 2), the very values the straightforward encoding
        gathers), per ON coordinate on + i (on = option value 0 or 1)."""
        t = self._tabs.get(b)
        if t is None:
            N, R = self.n, self.R
            ph = np.empty(R, dtype=np.complex64)
            ph.real, ph.imag = trig[:, 0], trig[:, 1]
            on = np.zeros(R, dtype=np.complex64)
            on.imag = 1.0
            on.real[1] = 1.0
            t = self._tabs[b] = np.concatenate([np.tile(ph, N), np.tile(on, N)])
        return t

    def values(self, acts: np.ndarray, tab: np.ndarray, ctx: np.ndarray) -> np.ndarray:
        """Q_low of the k candidates (k,) float32 (up to float32 rounding, module docstring);
        tab: ``table(b, ...)``; ctx (1, cw)."""
        np.add(acts, self.coloff, out=self.codes)
        tab.take(self.codes, out=self.X, mode="clip")                  # mode clip: no buffered bounds check
        np.matmul(ctx, self.W1c, out=self.c1)
        if self.b1_row is None:
            self.c1 += self.b1
        a = self.H[0]
        np.matmul(self.Xf, self.W1, out=a)
        np.maximum(a, F32(0.0), out=a)
        for W, h in zip(self.hidden, self.H[1:]):
            np.matmul(a, W, out=h)
            np.maximum(h, F32(0.0), out=h)
            a = h
        return a @ self.w_out

    def best(self, acts: np.ndarray, tab: np.ndarray, ctx: np.ndarray, valid: np.ndarray | None = None) -> int | None:
        """Index of the candidate with the largest Q_low, or None when another candidate comes
        within the error bound (the caller then evaluates straightforwardly). ctx: (1, cw)."""
        q = self.values(acts, tab, ctx)
        if valid is not None:
            q = np.where(valid, q, -np.inf)
        i = int(q.argmax())
        second = float(np.partition(q, self.k - 2)[self.k - 2])
        c = ctx[0]
        # each evaluation is within err = e0 + g . |ctx| <= e0 + |g| |ctx| (Cauchy-Schwarz) of the
        # exact Q, so a lead over 4 err here is a lead in the straightforward evaluation too
        margin = 4.0 * SAFETY * (self.err_const + self.err_ctx_norm * math.sqrt(float(c @ c)))
        gap = float(q[i]) - second
        if gap > margin or gap > 4.0 * SAFETY * self._decision_error(ctx[0]):      # both False for NaN
            return i
        return None

    def _decision_error(self, c: np.ndarray) -> float:
        """The bound of ``_error_bound`` with this decision's activations: |a_l| <= (largest
        computed activation over the candidates) + E_l instead of the worst case over all
        inputs (15 small numpy calls; run only when the cheap bound is not enough)."""
        A = np.abs(c.astype(np.float64)) @ self._absW1c + self._A1_const
        E = self._g1 * A
        for (aW, ab, g), h in zip(self._later, self.H):
            a = h.max(0)[:aW.shape[0]] + 2.0 * E                # |a| in either evaluation (each within E of exact)
            A = a @ aW + ab
            E = E @ aW + g * A
        return float(E[0])


def _error_bound(layers: list[tuple[np.ndarray, np.ndarray]], cw: int) -> tuple[float, np.ndarray]:
    """(e0, g) with |computed Q - exact Q| <= e0 + g . |ctx| for any float32 evaluation order
    of the MLP (straightforward or ``FastLowQ``), every encoding feature in [-1, 1].

    Layer l's exact pre-activation is bounded by A_l and its computed one is within E_l of it:
        A_1 = |ctx| |W1_ctx| + colsum |W1_x| + |b1|,    E_1 = gamma(in + 3) A_1
        A_l = |W_l|^T (A_{l-1} + E_{l-1}) + |b_l|,      E_l = |W_l|^T E_{l-1} + gamma(width + 2) A_l
    (ReLU is 1-Lipschitz and |relu(h)| <= |h|; the +2 / +3 count the bias and the split of
    layer 1 into two sums.) Everything is linear in |ctx| with non-negative coefficients, so
    the bound is e0 + g . |ctx|, computed here once by pushing the constant part and each
    ctx unit vector through; float64 with a relative slack for its own rounding."""
    def push(A1: np.ndarray, biases: bool) -> float:
        A, E = A1, _gamma(layers[0][0].shape[0] + 3) * A1
        for W, b in layers[1:]:
            aW = np.abs(W.astype(np.float64))
            A_next = aW.T @ (A + E) + (np.abs(b.astype(np.float64)) if biases else 0.0)
            E = aW.T @ E + _gamma(W.shape[0] + 2) * A_next
            A = A_next
        return float(E[0])

    W1, b1 = (x.astype(np.float64) for x in layers[0])
    e0 = push(np.abs(W1[cw:]).sum(0) + np.abs(b1), True)           # features at |1|, the biases
    g = np.array([push(np.abs(W1[j]), False) for j in range(cw)])   # the linear part, per |ctx_j|
    return e0 * (1.0 + 1e-6), g * (1.0 + 1e-6)
