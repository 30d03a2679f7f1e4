"""The rule's exact blocked scans over the corpus: the C1 region of each pair, the nearest C2-passing documents
(the "next" fallback and the fill), and rank recounts. Memory is bounded by the block sizes, never the corpus.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from hnm_cli.mining.numerics import c2_passes, gather_dot64, in_sorted, rowdot64, screen_eps
from hnm_cli.search import VectorSource

# Failing C1 documents kept per pair for the ranks before falling back to a recount scan.
RANK_CAP = 4096
# Rows of the score matrix turned into candidate lists at once: bounds memory when C1 regions are huge.
_CAND_ROWS = 32


@dataclass
class Candidates:
    """C1-region candidates of one pair, sorted by (similarity desc, row asc).

    With pruning, only the prefix up to the ``num_negatives``-th passing document is kept: nothing below it
    can be selected or change a selected document's rank. The counts always cover the whole region.
    """

    rows: np.ndarray
    s_qd: np.ndarray
    s_pd: np.ndarray
    excl: np.ndarray
    c1_pass: int = 0
    c2_fail: int = 0
    excluded: int = 0
    rank_exact: bool = True  # False: the documents above were too many to keep; ranks come from a recount

    def passing(self, c2_margin: float = 0.0) -> np.ndarray:
        ok: np.ndarray = ~self.excl & c2_passes(self.s_qd, self.s_pd, c2_margin)
        return ok


@dataclass
class ScanState:
    """Streaming C1-region state of one pair in the exact scan, keyed on float32 similarities.

    ``passing`` is already exact (float64 wherever float32 was within ``eps`` of a boundary). Pruning drops
    documents more than ``2 * eps`` below the ``keep``-th passing one: even in float64 they rank below
    ``keep`` passing documents, so they can neither be chosen nor sit above a chosen one. Until ``keep``
    documents pass, failing ones are kept for the ranks, up to ``RANK_CAP``; past that they are dropped
    (``overflow``) and the ranks of the chosen documents are recounted in a second scan.
    """

    rows: list[np.ndarray] = field(default_factory=list)
    s32: list[np.ndarray] = field(default_factory=list)
    passing: list[np.ndarray] = field(default_factory=list)
    size: int = 0
    c1_pass: int = 0
    c2_fail: int = 0
    excluded: int = 0
    overflow: bool = False

    def add(self, rows: np.ndarray, s32: np.ndarray, passing: np.ndarray, keep: int | None, eps: float) -> None:
        if self.overflow:
            rows, s32, passing = rows[passing], s32[passing], passing[passing]
        # Copies, not views: a view would keep the whole slice's candidate arrays alive.
        self.rows.append(rows.copy())
        self.s32.append(s32.copy())
        self.passing.append(passing.copy())
        self.size += len(rows)
        if keep is not None and (len(self.rows) >= 8 or self.size > RANK_CAP):
            self.prune(keep, eps)  # merge and prune in batches, not on every block

    def prune(self, keep: int | None, eps: float) -> None:
        if not self.rows:
            self.rows, self.s32, self.passing = [np.empty(0, np.int64)], [np.empty(0)], [np.empty(0, bool)]
            return
        r, s, p = np.concatenate(self.rows), np.concatenate(self.s32), np.concatenate(self.passing)
        if keep is not None:
            ps = s[p]
            if len(ps) >= keep:
                tau = np.partition(ps, len(ps) - keep)[len(ps) - keep]  # keep-th largest passing similarity
                sel = s >= tau - 2 * eps
                r, s, p = r[sel], s[sel], p[sel]
            if len(r) > RANK_CAP:
                self.overflow = True
                r, s, p = r[p], s[p], p[p]
        self.rows, self.s32, self.passing = [r], [s], [p]
        self.size = len(r)


def scan_c1(
    qv: np.ndarray,
    pv: np.ndarray,
    s_qp: np.ndarray,
    prows: np.ndarray,
    excl_keys: np.ndarray,
    todo: np.ndarray,
    source: VectorSource,
    block_rows: int,
    pair_block: int,
    keep: int | None,
    c2_margin: float = 0.0,
) -> dict[int, Candidates]:
    """Exact blocked scan: the C1 region of every pair in ``todo`` (pruned to ``keep`` passing unless None).

    Two float32 matrix products per block (Q.D and PD.D) decide C1 and C2 wherever they are farther than
    ``eps`` from the boundary; the few candidates within ``eps`` are decided on float64 similarities from
    `rowdot64`, as are the kept candidates at the end: the same numbers the hnsw path computes, so both
    paths take the same decisions and report the same distances.
    """
    n = source.n
    eps = screen_eps(source.dim)
    todo = np.sort(np.asarray(todo, dtype=np.int64))
    state = {int(i): ScanState() for i in todo}
    lo32 = (s_qp - eps).astype(np.float32)
    for start, block in source.blocks(block_rows):
        for c0 in range(0, len(todo), pair_block):
            pc = todo[c0 : c0 + pair_block]
            scores = qv[pc] @ block.T
            for r0 in range(0, len(pc), _CAND_ROWS):
                _scan_rows(
                    scores[r0 : r0 + _CAND_ROWS],
                    pc[r0 : r0 + _CAND_ROWS],
                    start,
                    block,
                    qv,
                    pv,
                    s_qp,
                    lo32,
                    prows,
                    excl_keys,
                    n,
                    eps,
                    state,
                    keep,
                    c2_margin,
                )
            del scores

    out: dict[int, Candidates] = {}
    for i, st in state.items():
        st.prune(keep, eps)
        rows = st.rows[0]
        docs = source.take(rows)
        s_qd = rowdot64(np.broadcast_to(qv[i], docs.shape), docs)
        s_pd = rowdot64(np.broadcast_to(pv[i], docs.shape), docs)
        excl = in_sorted(i * n + rows, excl_keys)
        order = np.lexsort((rows, -s_qd))
        c = Candidates(rows[order], s_qd[order], s_pd[order], excl[order])
        c.c1_pass, c.c2_fail, c.excluded = st.c1_pass, st.c2_fail, st.excluded
        c.rank_exact = not st.overflow
        out[i] = c
    return out


def _scan_rows(
    scores: np.ndarray,
    pc: np.ndarray,
    start: int,
    block: np.ndarray,
    qv: np.ndarray,
    pv: np.ndarray,
    s_qp: np.ndarray,
    lo32: np.ndarray,
    prows: np.ndarray,
    excl_keys: np.ndarray,
    n: int,
    eps: float,
    state: dict[int, ScanState],
    keep: int | None,
    c2_margin: float = 0.0,
) -> None:
    """One slice of `scan_c1`: Q.D scores of pairs ``pc`` against one corpus block -> candidate updates."""
    pi, cj = np.nonzero(scores > lo32[pc, None])
    if len(pi) == 0:
        return
    s_qd = scores[pi, cj].astype(np.float64)
    gp = pc[pi]
    rows = start + cj.astype(np.int64)
    # C1 on float32 where it is clear, float64 within eps of d(Q,PD).
    c1 = s_qd > s_qp[gp] + eps
    near = np.flatnonzero(~c1)
    if len(near):
        c1[near] = gather_dot64(qv, gp[near], block, cj[near]) > s_qp[gp[near]]
    c1 &= rows != prows[gp]
    gp, rows, cj, s_qd = gp[c1], rows[c1], cj[c1], s_qd[c1]
    if len(gp) == 0:
        return
    # C2 needs PD.D for these candidates: one more matrix product when they are many.
    if len(gp) > len(pc) * 64:
        s_pd = (pv[pc] @ block.T)[np.searchsorted(pc, gp), cj].astype(np.float64)
    else:
        s_pd = gather_dot64(pv, gp, block, cj)
    c2 = s_qd > s_pd + c2_margin + eps
    near = np.flatnonzero(np.abs(s_qd - s_pd - c2_margin) <= eps)
    if len(near):
        c2[near] = c2_passes(
            gather_dot64(qv, gp[near], block, cj[near]), gather_dot64(pv, gp[near], block, cj[near]), c2_margin
        )
    excl = in_sorted(gp * n + rows, excl_keys)
    passing = c2 & ~excl
    # gp is ascending (np.nonzero walks row-major and pc is sorted): split it into runs per pair.
    uniq, first = np.unique(gp, return_index=True)
    bounds = [*first[1:], len(gp)]
    for g, lo, hi in zip(uniq, first, bounds, strict=True):
        st = state[int(g)]
        st.c1_pass += int(hi - lo)
        st.excluded += int(excl[lo:hi].sum())
        st.c2_fail += int((~c2[lo:hi] & ~excl[lo:hi]).sum())
        st.add(rows[lo:hi], s_qd[lo:hi], passing[lo:hi], keep, eps)


def count_ranks(
    qv: np.ndarray,
    targets: dict[int, tuple[np.ndarray, np.ndarray]],
    source: VectorSource,
    block_rows: int,
    pair_block: int,
) -> dict[int, np.ndarray]:
    """1-based ranks of given documents in their pair's query ranking, by a counting scan.

    ``targets[i] = (rows, s64)``: documents of pair i and their float64 similarities. A document D' counts
    above D when s(D') > s(D), or equal with a lower row; float32 decides where it is clear.
    """
    eps = screen_eps(source.dim)
    todo = np.array(sorted(targets), dtype=np.int64)
    counts = {int(i): np.zeros(len(targets[int(i)][0]), dtype=np.int64) for i in todo}
    for start, block in source.blocks(block_rows):
        for c0 in range(0, len(todo), pair_block):
            pc = todo[c0 : c0 + pair_block]
            scores = qv[pc] @ block.T
            for r, i in enumerate(pc):
                rows, s64 = targets[int(i)]
                row_scores = scores[r]
                for j, (t_row, t) in enumerate(zip(rows, s64, strict=True)):
                    counts[int(i)][j] += int(np.count_nonzero(row_scores > t + eps))
                    near = np.flatnonzero(np.abs(row_scores - t) <= eps)
                    if len(near):
                        s_near = rowdot64(np.broadcast_to(qv[i], (len(near), block.shape[1])), block[near])
                        above = (s_near > t) | ((s_near == t) & (start + near < t_row))
                        counts[int(i)][j] += int(np.count_nonzero(above))
            del scores
    return {i: c + 1 for i, c in counts.items()}


_NEXT_STEP_CELLS = 1 << 21  # pairs x corpus rows per step of `scan_next` (16 MiB of int64 indices)


def scan_next(
    qv: np.ndarray,
    pv: np.ndarray,
    prows: np.ndarray,
    excl_keys: np.ndarray,
    todo: np.ndarray,
    source: VectorSource,
    block_rows: int,
    pair_block: int,
    m: int,
    c2_margin: float = 0.0,
) -> dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Exact blocked scan for ``fallback="next"``: per pair the ``m`` non-excluded documents (not PD) with
    the highest similarity to Q that pass C2, as (rows, s_qd, s_pd) sorted best first."""
    n = source.n
    eps = screen_eps(source.dim)
    slack = m + 16  # float32 screening may let a few C2 near-ties through; the float64 check removes them
    todo = np.sort(np.asarray(todo, dtype=np.int64))
    best: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {
        int(i): (np.empty(0, np.int64), np.empty(0), np.empty(0)) for i in todo
    }
    excl_pair = excl_keys // n
    excl_row = excl_keys % n
    for start, block in source.blocks(block_rows):
        b = len(block)
        # argpartition's int64 indices are twice the size of the float32 scores: cap the cells per step so the
        # fallback's temporaries stay near the rule scan's (a 1024 x 16384 step would add ~300 MiB at peak).
        step = max(1, min(pair_block, _NEXT_STEP_CELLS // max(b, 1)))
        for c0 in range(0, len(todo), step):
            pc = todo[c0 : c0 + step]
            s_q = qv[pc] @ block.T
            s_p = pv[pc] @ block.T
            s_p += c2_margin - eps
            s_q[~(s_q > s_p)] = -np.inf
            del s_p
            local = prows[pc] - start
            inside = (local >= 0) & (local < b)
            s_q[np.flatnonzero(inside), local[inside]] = -np.inf
            sel = (excl_row >= start) & (excl_row < start + b) & np.isin(excl_pair, pc)
            if sel.any():
                s_q[np.searchsorted(pc, excl_pair[sel]), excl_row[sel] - start] = -np.inf
            k = min(slack, b)
            cols = np.argpartition(-s_q, k - 1, axis=1)[:, :k] if k < b else np.tile(np.arange(b), (len(pc), 1))
            vals = np.take_along_axis(s_q, cols, 1)
            del s_q
            pi, ci = np.nonzero(np.isfinite(vals))
            if len(pi) == 0:
                continue
            gp = pc[pi]
            cj = cols[pi, ci]
            s_qd = gather_dot64(qv, gp, block, cj)
            s_pd = gather_dot64(pv, gp, block, cj)
            ok = c2_passes(s_qd, s_pd, c2_margin)
            gp, cj, s_qd, s_pd = gp[ok], cj[ok], s_qd[ok], s_pd[ok]
            for g in np.unique(gp):
                at = gp == g
                r0, q0, p0 = best[int(g)]
                r = np.concatenate([r0, start + cj[at].astype(np.int64)])
                q = np.concatenate([q0, s_qd[at]])
                p = np.concatenate([p0, s_pd[at]])
                order = np.lexsort((r, -q))[:m]
                best[int(g)] = (r[order], q[order], p[order])
    return best
