"""The k nearest discrete IRS actions to a proto-action without enumerating the action set:
an exact search in *rank space* over a table fixed in advance. Numpy only; used by the
runtime for one row (``RankSpace.row``) and by ``agents.knn`` for batches (``RankSpace.batch``).

Metric and definitions: ``agents.knn`` (2N coordinates: N phases on a circular grid of 2^b
options, N ON bits with options 0 and 1; squared distance = sum of per-coordinate costs).

**Closed forms.** With t_j the coordinate in grid units (t = u 2^b for a phase; t = w for an
ON bit, whose options 0, 1 are a grid of two on [0, 1], so w must lie in [0, 1]), i_j =
round(t_j) and r_j = t_j - i_j (|r_j| <= 1/2), the option of rank o lies at offset
0, +1, -1, +2, -2, ... (toward r_j's side first) from i_j, and costs
    E[j, o] = s_j (a_o^2 - 2 sigma_o a_o |r_j|)      (a_o = ceil(o / 2), sigma_o = +1 toward, -1 away)
more than the rounding (s_j = 2^(-2b) for phases, 1 for ON bits): a row ascending in o for
every |r_j| <= 1/2. No distance table, no sort of options. Sorting the coordinates by
their margin E[j, 1] gives the rank-space table E'[c, o] (rows and column 1 ascending). An
action near the rounding is a set S = {(c_i, o_i)} (distinct coordinate ranks, o_i >= 1)
costing sum E'[c_i, o_i] more than the rounding.

**Dominance table** (``dominance_table``). Two families of actions never cost more than S:
lowering options on S's own coordinates (prod (o_i + 1) sets, rows ascending), and rank-1
options on coordinates c'_1 < ... < c'_m matched to S's m largest coordinates with c' <= c
(margins ascending; ``_gale_count`` of them). They share the 2^d subsets of S's coordinates
at rank 1. When they hold k or more sets besides S, S costs at least as much as k others
and is not among the k best unless tied. The table lists every other S: 2884 sets for
2N = 20 coordinates, 8 options and k = 50 (139 with 2 options); coordinate ranks >= k - 1
never appear, so large N adds no rows. Rows are grouped by largest coordinate rank.

**Search.** Pass 1 sums the table of first changes only (rank 1; 139 sets for 2N = 20) in
one gather over the sorted margins and sorts it; its k-th smallest T bounds the k-th
extra cost. Only coordinate ranks with margin <= T (a prefix of the table) and option
ranks that some coordinate reaches within T can take part: when that is rank 1 only (ON
bits, 1-2 bit phases, most 3-bit decisions) pass 1 is the answer, else pass 2 sums the
table built for that many options over that prefix (one gather, one partial sort).

**Exactness.** Accepted only when the k + 1 smallest sums are pairwise more than TOL apart
and no two adjacent entries of E' within the bound are (two successive options of a
coordinate, the rounding and the first change, two successive margins). Then the k best
are unique and all in the table: a set outside it within TOL of the k-th would dominate
k table sets at or below the k-th, so it would be tied with the k-th through a chain of
single steps (lower an option by one rank, move a rank-1 change to the next cheaper
coordinate) each costing <= TOL, i.e. two adjacent entries within TOL. Their order is
the order of their distances, hence ``agents.knn``'s (its stable sorts decide ties only).
Otherwise the row is declined (None / ok False) and the caller runs the tie-exact merge.
"""

from __future__ import annotations

import functools

import numpy as np

TOL = 1e-9            # sums closer than this count as tied (float64 rounding here is ~1e-15)
BIG = 1e6             # extra cost of an option that does not exist (phase rank >= 2^b, ON rank >= 2)
PAIR_COORDS = 12      # T looks at pairs among this many cheapest coordinates (any pairs give a bound)


def _gale_count(cs: tuple[int, ...]) -> int:
    """Sets X of non-negative integers, the empty set included, whose i-th largest element is
    <= the i-th largest of ``cs`` (ascending) for every i <= |X|."""
    total = 0
    for m in range(len(cs) + 1):
        ways = {-1: 1}                                   # strictly increasing x_1 < ... with x_i <= caps[i]
        for cap in cs[len(cs) - m:]:
            nxt: dict[int, int] = {}
            for last, n in ways.items():
                for x in range(last + 1, cap + 1):
                    nxt[x] = nxt.get(x, 0) + n
            ways = nxt
        total += sum(ways.values())
    return total


@functools.lru_cache(maxsize=32)
def dominance_table(C: int, R: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Every set S of (coordinate rank < C, option rank in 1..R-1) that can be among the k best
    (module docstring): coordinate ranks (M, d) and option ranks (M, d), padded with
    (-1, 0), rows sorted by largest coordinate rank (the empty set first)."""
    rows: list[tuple[tuple[int, int], ...]] = [()]

    def options(cs: tuple[int, ...], budget: int) -> None:
        d = len(cs)

        def rec(i: int, prod: int, os: tuple[int, ...]) -> None:
            if i == d:
                rows.append(tuple(zip(cs, os)))
                return
            for o in range(1, R):
                if prod * (o + 1) << (d - i - 1) > budget:   # the rest contribute >= 2 each
                    break
                rec(i + 1, prod * (o + 1), os + (o,))
        rec(0, 1, ())

    def grow(cs: tuple[int, ...]) -> None:
        for c in range(cs[-1] + 1 if cs else 0, C):
            nc = cs + (c,)
            g = _gale_count(nc)
            if g - 1 > k - 1:            # even all rank-1 options are dominated k times; larger c too
                break
            options(nc, k - g + (1 << len(nc)))     # prod (o+1) + g - 2^d - 1 <= k - 1
            grow(nc)

    grow(())
    d = max(1, max(len(r) for r in rows))
    rows.sort(key=lambda r: max((c for c, _ in r), default=-1))
    coords = np.full((len(rows), d), -1, dtype=np.int64)
    ranks = np.zeros((len(rows), d), dtype=np.int64)
    for i, r in enumerate(rows):
        for j, (c, o) in enumerate(r):
            coords[i, j], ranks[i, j] = c, o
    return coords, ranks


def _smallest(sums: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the m smallest entries, ascending, and those entries (order among equal
    entries arbitrary: the caller declines ties)."""
    if sums.shape[0] < 640:                # a full sort is cheaper than partition + sort here
        idx = sums.argsort()[:m]
    else:
        part = sums.argpartition(m - 1)[:m]
        idx = part[sums[part].argsort()]
    return idx, sums[idx]


class RankSpace:
    """The rank-space search for N elements, k neighbours, resolutions up to ``max_bits``."""

    def __init__(self, n: int, k: int, max_bits: int) -> None:
        self.n, self.k = int(n), int(k)
        self.R = R = max(1 << int(max_bits), 2)
        self.C = C = 2 * self.n
        coords, ranks = dominance_table(min(C, self.k), R, self.k)
        # per r2 (option ranks taking part): flat indices c * R + o into E' (C*R + 1 entries, the
        # last a 0 for padding), (depth, M) so that a prefix of rows is a column slice; prefix
        # counts (rows whose coordinate ranks are all < kc are the first pref[kc]); the rows as
        # (M, Ck) flat indices per coordinate rank (o = 0 where unused; built on first use)
        self.Ck = min(C, self.k)                          # coordinate ranks >= k - 1 never change
        self._rows_of: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self.tabs: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for r2 in range(2, R + 1):
            keep = (ranks < r2).all(1)
            c, o = coords[keep], ranks[keep]
            self._rows_of[r2] = (c, o)
            flat = np.where(c >= 0, c * R + o, C * R)
            pref = np.searchsorted(c.max(1), np.arange(C + 1), "left")
            self.tabs[r2] = (np.ascontiguousarray(flat.T), pref)
        c2 = self._rows_of[2][0]                          # table 2 over the sorted margins (C: the padding 0)
        self.tab1 = np.ascontiguousarray(np.where(c2 >= 0, c2, C).T)
        self._dense: dict[int, np.ndarray] = {}
        a = (np.arange(R) + 1) // 2
        toward = np.arange(R) % 2 == 1
        self._offp, self._offn = np.where(toward, a, -a), np.where(toward, -a, a)   # rank offsets, r >= 0 / r < 0
        self._a2, self._2sa = (a * a).astype(np.float64), np.where(toward, 2.0 * a, -2.0 * a)
        self._res: dict[int, tuple] = {}
        # buffers of the one-row search (RankSpace is not thread-safe)
        self._t = np.empty(C)
        self._mpad = np.zeros(C + 1)                     # sorted margins, then the padding 0
        self._ms = self._mpad[:C]
        self._ebuf = np.zeros(C * R + 1)                 # E' flat, then the padding 0
        self._es = self._ebuf[:C * R].reshape(C, R)
        self._vs = np.empty((C, R), dtype=np.int64)      # option values in rank space

    def dense(self, r2: int) -> np.ndarray:
        """Rows of table r2 as (M, Ck) flat indices c * R + o into rank space (o = 0: unchanged)."""
        d = self._dense.get(r2)
        if d is None:
            c, o = self._rows_of[r2]
            d = np.arange(self.Ck) * self.R + np.zeros((c.shape[0], 1), dtype=np.intp)
            for j in range(c.shape[1]):
                used = c[:, j] >= 0
                d[used, c[used, j]] += o[used, j]
            d = self._dense[r2] = d
        return d

    def resolution(self, b: int) -> tuple:
        """Tables of resolution b (see the module docstring): A2, B with E = A2 - |r| B; the
        grid multiplier, s, s and 2s per coordinate; option counts - 1 per coordinate, (C, 1) (bit
        masks, 2^b - 1 or 1); for ranks o >= 2 (phases only) the column minima as functions of
        max |r| (toward ranks) or min |r| (away ranks): [(a_o^2 s, 2 sigma_o a_o s, toward)]."""
        t = self._res.get(b)
        if t is None:
            n, R = self.n, self.R
            L = np.array([1 << b] * n + [2] * n)
            s = np.array([1.0 / float(1 << (2 * b))] * n + [1.0] * n)
            exists = np.arange(R)[None, :] < L[:, None]
            A2 = np.where(exists, s[:, None] * self._a2, BIG * (1.0 + np.arange(R)))
            B = np.where(exists, s[:, None] * self._2sa, 0.0)
            mult = np.array([float(1 << b)] * n + [1.0] * n)
            sp = float(s[0])
            cols = [(float(self._a2[o]) * sp, float(self._2sa[o]) * sp, o % 2 == 1) for o in range(2, 1 << b)]
            t = self._res[b] = (A2, B, mult, s, 2.0 * s, (L - 1)[:, None], cols)
        return t

    def row(self, e: np.ndarray, b: int, unit: bool = False, want_dist: bool = True):
        """One proto-action e (2N,) = (u turns, w) at resolution b -> (actions (k, 2N) int64
        option values, nearest first; squared distances (k,) or None), or None when declined
        (ties, w outside [0, 1], too few actions). ``unit``: the caller guarantees w in [0, 1]."""
        n, k = self.n, self.k
        if b < 1:                                                # one phase option: not covered here
            return None
        A2, B, mult, s, s2, Lm, cols = self._res.get(b) or self.resolution(b)
        t = self._t
        np.multiply(e, mult, out=t)
        if not unit and not (t[n:].min() >= 0.0 and t[n:].max() <= 1.0):
            return None
        i0 = np.rint(t)
        r = t - i0
        ar = np.abs(r)
        marg = s - s2 * ar                                       # first change of each coordinate, E[:, 1]
        P = marg.argsort()
        ms = marg.take(P, out=self._ms)
        # pass 1: rank-1 options only (table 2, all of it); its k-th smallest bounds the k-th extra cost
        if self.tab1.shape[1] <= k:
            return None
        sel, top = _smallest(np.add.reduce(self._mpad[self.tab1], 0), k + 1)
        T = float(top[k - 1]) + TOL
        kc = int(ms.searchsorted(T, "right"))
        r2, rmin = 2, 0.0
        if cols and cols[0][0] <= T:                             # phase ranks >= 2 within T (E[:, 2] >= s)
            rmin, rmax = float(ar[:n].min()), None
            for a2s, b2s, toward in cols:
                if toward and rmax is None:
                    rmax = float(ar[:n].max())
                if a2s - b2s * (rmax if toward else rmin) > T:
                    break
                r2 += 1
        # ties between adjacent entries within the bound (module docstring): margins against 0
        # and each other; options 1 and 2 of a phase (4 s |r| apart; any other two successive
        # options are at least a margin apart)
        if not float(ms[0]) > TOL or (kc > 1 and (ms[1:kc] - ms[:kc - 1]).min() <= TOL) \
                or (r2 > 2 and 4.0 * rmin * float(s[0]) <= TOL):
            return None
        if r2 > 2:                                               # pass 2: options up to rank r2 - 1
            E = A2 - ar[:, None] * B                             # (C, R) extra cost per option rank
            E.take(P, 0, out=self._es)                           # ... by coordinate rank
            flatT, pref = self.tabs[r2]
            M = min(max(int(pref[kc]), k + 1), flatT.shape[1])       # more rows than needed are harmless
            sel, top = _smallest(np.add.reduce(self._ebuf[flatT[:, :M]], 0), k + 1)
        if not ((top[1:] - top[:-1]).min() > TOL and top[k - 1] < 0.5 * BIG):     # ties among the k + 1 best
            return None
        sel = sel[:k]
        V = np.where(np.signbit(r)[:, None], self._offn, self._offp)      # offsets of the option ranks
        V += i0.astype(np.int64)[:, None]
        V &= Lm                                                  # option values (mod 2^b)
        V.take(P, 0, out=self._vs)                               # ... by coordinate rank
        acts = np.empty((k, self.C), dtype=np.int64)
        if self.Ck < self.C:                                     # coordinates ranked >= Ck keep the rounding
            acts[:] = V[:, 0]
        acts[:, P[:self.Ck]] = self._vs.ravel()[self.dense(r2)[sel]]
        if not want_dist:
            return acts, None
        return acts, float(np.dot(s, r * r)) + top[:k]

    def _stacked(self, max_b: int) -> tuple:
        """``resolution`` tables of b = 0..max_b stacked along a leading axis (for batches)."""
        t = self._res.get(("stack", max_b))
        if t is None:
            res = [self.resolution(b) for b in range(max_b + 1)]
            R = self.R
            colA = np.full((max_b + 1, R), BIG)       # phase column minima: A - B' rho per rank (rank >= 2)
            colB = np.zeros((max_b + 1, R))
            for b, r in enumerate(res):
                for o, (a2s, b2s, _) in enumerate(r[6], start=2):
                    colA[b, o], colB[b, o] = a2s, b2s
            t = self._res[("stack", max_b)] = tuple(np.stack([r[i] for r in res]) for i in range(6)) + (colA, colB)
        return t

    def batch(self, u: np.ndarray, w: np.ndarray, bits: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``row`` for B rows at once: u, w (B, N) float64, bits (B,) -> actions (B, k, 2N) int64,
        squared distances (B, k), ok (B,) bool; rows with ok False (declined) are to be
        computed by the tie-exact merge (their actions and distances here are meaningless)."""
        n, k, R, C = self.n, self.k, self.R, self.C
        Bn = u.shape[0]
        bi = bits.astype(np.intp)
        A2s, Bs, mults, ss, s2s, Lms, colA, colB = self._stacked(int(bi.max()))
        t = np.concatenate([u, w], 1) * mults[bi]
        ok = (w >= 0.0).all(1) & (w <= 1.0).all(1) & (bi >= 1)       # b = 0: one phase option, not covered
        i0 = np.rint(t)
        r = t - i0
        ar = np.abs(r)
        E = A2s[bi] - ar[..., None] * Bs[bi]                                  # (B, C, R)
        marg = ss[bi] - s2s[bi] * ar
        P = marg.argsort(1)
        rows = np.arange(Bn)[:, None]
        ms = marg[rows, P]
        ebuf = np.zeros((Bn, C * R + 1))
        ebuf[:, :C * R] = E[rows, P].reshape(Bn, C * R)
        flatT, pref = self.tabs[2]
        if flatT.shape[1] <= k:
            return np.zeros((Bn, k, C), dtype=np.int64), np.zeros((Bn, k)), np.zeros(Bn, dtype=bool)

        def smallest(sums: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            part = sums.argpartition(k, 1)[:, :k + 1]
            vals = np.take_along_axis(sums, part, 1)
            o = vals.argsort(1)
            return np.take_along_axis(part, o, 1), np.take_along_axis(vals, o, 1)

        sel, top = smallest(np.add.reduce(ebuf[:, flatT], 1))                # pass 1: rank-1 options
        T = top[:, k - 1] + TOL
        kc = np.count_nonzero(ms <= T[:, None], 1)
        rmin, rmax = ar[:, :n].min(1), ar[:, :n].max(1)
        rho = np.where(np.arange(R) % 2 == 1, rmax[:, None], rmin[:, None])   # toward ranks: max |r|
        within = colA[bi] - colB[bi] * rho <= T[:, None]                       # phase rank o within T
        r2 = 2 + np.cumprod(within[:, 2:], 1).sum(1)
        gaps = ms[:, 1:] - ms[:, :-1]
        ok &= (ms[:, 0] > TOL) & ~((gaps <= TOL) & (np.arange(1, C) < kc[:, None])).any(1)
        ok &= ~((r2 > 2) & (4.0 * rmin * ss[bi, 0] <= TOL))
        tab = np.full(Bn, 2)
        deep = np.nonzero(ok & (r2 > 2))[0]
        if deep.size:                                                         # pass 2 for rows that need it
            g = int(r2[deep].max())
            flatT2, pref2 = self.tabs[g]
            M = min(max(int(pref2[int(kc[deep].max())]), k + 1), flatT2.shape[1])
            sel2, top2 = smallest(np.add.reduce(ebuf[deep][:, flatT2[:, :M]], 1))
            sel[deep], top[deep], tab[deep] = sel2, top2, g
        ok &= ((top[:, 1:] - top[:, :-1]) > TOL).all(1) & (top[:, k - 1] < 0.5 * BIG)
        acts = np.zeros((Bn, k, C), dtype=np.int64)
        good = np.nonzero(ok)[0]                                              # actions of accepted rows only
        V = np.where(np.signbit(r[good])[..., None], self._offn, self._offp)  # option values (G, C, R)
        V += i0[good].astype(np.int64)[..., None]
        V &= Lms[bi[good]]                                                   # (G, C, 1)
        O = np.zeros((good.size, k, C), dtype=np.intp)                        # option rank per coordinate
        for g in np.unique(tab[good]):
            j = np.nonzero(tab[good] == g)[0]
            O[j[:, None, None], np.arange(k)[None, :, None], P[good[j], None, :self.Ck]] = \
                self.dense(int(g))[sel[good[j], :k]] % R
        acts[good] = V[np.arange(good.size)[:, None, None], np.arange(C), O]
        dist = (ss[bi] * r * r).sum(1)[:, None] + top[:, :k]
        return acts, dist, ok
