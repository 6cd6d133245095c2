"""The exact solver (plan): the best chain of contiguous segments from the edge, through servers, back.

A chain is: the edge runs units [0, a), servers (each used at most once, in any order) run [a, b) in
contiguous segments, the edge runs [b, n). Its cost is an additive sum over stages and hops plus, under
the throughput objective, `weight` x the largest pipeline item (Alpa: sum + (B - 1) x max, B = S).
This is the chain DP of REFERENCES.md, F(j, k) = min_i combine(F(i, k'), hop(i), stage(i, j)), made
exact for devices that may each be used once:

1. A relaxed DP (devices reusable, the edge's two pieces checked apart) run backwards gives, for every
   cut and kind, a lower bound on the cost still to come. If its optimum is a valid chain and the
   objective is additive, that chain is optimal and we are done (the common case).
2. Otherwise a forward DP keeps, per (cut, last kind), the Pareto front of partial chains over
   (cost so far, largest item so far, devices used per kind, edge prefix); a partial chain is dropped
   when another is no worse in every coordinate (it can then be completed no worse) or when its lower
   bound reaches the best complete chain found (branch and bound). Both rules only drop chains that
   cannot beat one kept, so the result is the exact optimum.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from partition.plan.instance import Instance

INF = math.inf


@dataclass(frozen=True)
class Solution:
    objective: float  # seconds: the workload's objective (total_s or round_s)
    stages: tuple[tuple[int, int, int], ...]  # (kind, start, end) in chain order; kind 0 is the edge
    codecs: tuple[str, ...]  # codec_out of each stage ("raw" where it sends token ids or nothing)


def solve(inst: Instance, shortcut: bool = True) -> Solution | None:
    """The optimal chain, or None when no chain satisfies memory, links and pinning.

    `shortcut=False` skips step 1's early exit and seeding (tests use it to check step 2 alone).
    """
    return _Solver(inst).run(shortcut)


class _Solver:
    def __init__(self, inst: Instance) -> None:
        self.inst = inst
        n, kinds = inst.n, inst.kinds
        self.n, self.kinds, self.W = n, kinds, inst.weight
        self.K = len(kinds)
        edge = kinds[0]
        lo, hi = (1, n - 1) if inst.pin else (0, n)  # units a server may hold: [lo, hi)
        self.lo, self.hi = lo, hi
        self.prefix_ok = [lo <= a < hi and edge.mem[a] <= edge.cap for a in range(n + 1)]
        self.suffix_mem = [edge.mem[n] - edge.mem[b] for b in range(n + 1)]
        self.suffix_ok = [lo < b <= hi and self.suffix_mem[b] <= edge.cap for b in range(n + 1)]
        # Largest end j of a segment [i, j) that fits one device of kind k (servers only).
        self.jmax = [[0] * (n + 1)] + [self._reach(kind.mem, kind.cap) for kind in kinds[1:]]
        self.min_suffix_item = min(
            (edge.item[n] - edge.item[b] for b in range(n + 1) if self.suffix_ok[b]), default=INF
        )

    def _reach(self, mem: tuple[int, ...], cap: int) -> list[int]:
        """For each start i, the largest j such that [i, j) fits `cap` (j == i: not even one unit)."""
        out, j = list(range(self.n + 1)), self.lo
        for i in range(self.lo, self.hi):
            j = max(j, i)  # memory only grows with j, so the reach of i + 1 starts where i's ended
            while j < self.hi and mem[j + 1] - mem[i] <= cap:
                j += 1
            out[i] = j
        return out

    # -- 1. relaxed backward DP -------------------------------------------------------------------
    def relax(self) -> None:
        n, K, kinds, hops = self.n, self.K, self.kinds, self.inst.hops
        edge = kinds[0]
        R = [[INF] * (n + 1) for _ in range(K)]  # least cost to finish from cut i after a device of kind k
        M = [[INF] * (n + 1) for _ in range(K)]  # least possible largest item to finish (throughput bound)
        choice: list[list[tuple[int, int] | None]] = [[None] * (n + 1) for _ in range(K)]
        for i in range(n, -1, -1):
            best_from = [(INF, 0)] * K  # per next kind: (cost of [i, j) + R at j, best j)
            item_from = [INF] * K
            for k2 in range(1, K):
                kind, r2, m2 = kinds[k2], R[k2], M[k2]
                c_i, t_i = kind.cost[i], kind.item[i]
                best, arg, item = INF, 0, INF
                for j in range(i + 1, self.jmax[k2][i] + 1):
                    v = kind.cost[j] - c_i + r2[j]
                    if v < best:
                        best, arg = v, j
                    t = max(kind.item[j] - t_i, m2[j])
                    if t < item:
                        item = t
                best_from[k2], item_from[k2] = (best, arg), item
            for k in range(K):
                best, arg, item = INF, None, INF
                back = hops.get((k, 0)) if k else None
                if back is not None and self.suffix_ok[i]:
                    best, arg = back[i].cost + edge.cost[n] - edge.cost[i], (0, i)
                    item = back[i].item
                for k2 in range(1, K):
                    options = hops.get((k, k2))
                    if options is None or best_from[k2][0] == INF:
                        continue
                    hop = options[i]
                    v = hop.cost + best_from[k2][0]
                    if v < best:
                        best, arg = v, (k2, best_from[k2][1])
                    item = min(item, max(hop.item, item_from[k2]))
                R[k][i], M[k][i], choice[k][i] = best, item, arg
        self.R, self.M, self.choice = R, M, choice

    def relaxed_chain(self) -> tuple[float, list[tuple[int, int, int]]] | None:
        """The relaxed optimum as (cost, [(kind, start, end)]), or None if even that is infeasible."""
        edge = self.kinds[0]
        best, start = INF, None
        for a in range(self.n + 1):
            if self.prefix_ok[a] and edge.cost[a] + self.R[0][a] < best:
                best, start = edge.cost[a] + self.R[0][a], a
        if start is None:
            return None
        stages = [(0, 0, start)] if start > 0 else []
        k, i = 0, start
        while True:
            k2, j = self.choice[k][i]
            if k2 == 0:
                if j < self.n:
                    stages.append((0, j, self.n))
                return best, stages
            stages.append((k2, i, j))
            k, i = k2, j

    # -- exact evaluation of a complete chain -------------------------------------------------------
    def chain_cost(self, stages: list[tuple[int, int, int]]) -> float | None:
        """Objective of a chain, or None if it breaks a constraint the relaxation ignores."""
        kinds, hops, n = self.kinds, self.inst.hops, self.n
        used = [0] * self.K
        edge_mem, edge_item, total, items = 0, 0.0, 0.0, []
        prev_kind = 0
        for pos, (k, i, j) in enumerate(stages):
            kind = kinds[k]
            if pos > 0 or k != 0:
                hop = hops[(prev_kind, k)][i]
                total += hop.cost
                items.append(hop.item)
            total += kind.cost[j] - kind.cost[i]
            if k == 0:
                edge_mem += kind.mem[j] - kind.mem[i]
                edge_item += kind.item[j] - kind.item[i]
            else:
                used[k] += 1
                items.append(kind.item[j] - kind.item[i])
            prev_kind = k
        if prev_kind != 0:
            hop = hops[(prev_kind, 0)][n]
            total += hop.cost
            items.append(hop.item)
        if edge_mem > kinds[0].cap or any(used[k] > len(kinds[k].devices) for k in range(1, self.K)):
            return None
        return total + self.W * max([edge_item, *items])

    # -- 2. forward Pareto DP with branch and bound ---------------------------------------------------
    def run(self, shortcut: bool) -> Solution | None:
        n, kinds, W = self.n, self.kinds, self.W
        edge = kinds[0]
        best_cost, best_chain = INF, None
        if edge.mem[n] <= edge.cap:
            best_cost, best_chain = edge.cost[n] + W * edge.item[n], [(0, 0, n)]
        self.relax()
        relaxed = self.relaxed_chain()
        if relaxed is not None and shortcut:
            cost = self.chain_cost(relaxed[1])
            if cost is not None and cost < best_cost:
                best_cost, best_chain = cost, relaxed[1]
            if cost is not None and W == 0:
                # The relaxation's optimum is a valid chain, so no chain beats it (or edge-only, if better).
                return self._solution(best_cost, best_chain)
        if relaxed is not None:
            found = self.search(best_cost)
            if found is not None:
                best_cost, best_chain = found
        return None if best_chain is None else self._solution(best_cost, best_chain)

    def search(self, bound: float) -> tuple[float, list[tuple[int, int, int]]] | None:
        n, K, kinds, hops, W = self.n, self.K, self.kinds, self.inst.hops, self.W
        edge, R, M, jmax = kinds[0], self.R, self.M, self.jmax
        counts_bind = [k > 0 and len(kinds[k].devices) < n for k in range(K)]
        a_matters = W > 0 or edge.mem[n] > edge.cap
        eps = 1e-12 * max(1.0, abs(bound)) if bound < INF else 0.0
        best: tuple[float, list] | None = None
        # fronts[i][k]: entries (cost, largest item, used per kind, a, parent, kind, start)
        fronts: list[list[list[tuple]]] = [[[] for _ in range(K)] for _ in range(n + 1)]
        zero = (0,) * K
        for a in range(n):
            if self.prefix_ok[a]:
                fronts[a][0].append((edge.cost[a], 0.0, zero, a, None, 0, 0))
        for i in range(n + 1):
            for k in range(K):
                for entry in fronts[i][k]:
                    cost, mx, used, a, *_ = entry
                    edge_lb = edge.item[a] + self.min_suffix_item
                    if cost + R[k][i] + W * max(mx, M[k][i], edge_lb) >= bound - eps:
                        continue
                    back = hops.get((k, 0)) if k else None
                    if (
                        back is not None
                        and self.suffix_ok[i]
                        and edge.mem[a] + self.suffix_mem[i] <= edge.cap
                    ):
                        hop = back[i]
                        edge_item = edge.item[a] + edge.item[n] - edge.item[i]
                        total = (
                            cost + hop.cost + edge.cost[n] - edge.cost[i] + W * max(mx, hop.item, edge_item)
                        )
                        if total < bound - eps:
                            bound, eps = total, 1e-12 * max(1.0, abs(total))
                            best = (total, self._path(entry, i) + ([(0, i, n)] if i < n else []))
                    for k2 in range(1, K):
                        options = hops.get((k, k2))
                        if options is None or used[k2] >= len(kinds[k2].devices):
                            continue
                        hop = options[i]
                        kind, r2, m2 = kinds[k2], R[k2], M[k2]
                        base = cost + hop.cost - kind.cost[i]
                        mx2 = max(mx, hop.item) if W else 0.0
                        used2 = used[:k2] + (used[k2] + 1,) + used[k2 + 1 :]
                        t_i = kind.item[i]
                        for j in range(i + 1, jmax[k2][i] + 1):
                            c = base + kind.cost[j]
                            m = max(mx2, kind.item[j] - t_i) if W else 0.0
                            if c + r2[j] + W * max(m, m2[j], edge_lb) >= bound - eps:
                                continue
                            _insert(fronts[j][k2], (c, m, used2, a, entry, k2, i), counts_bind, a_matters)
                fronts[i][k] = []  # done with this cut; free memory
        return best

    @staticmethod
    def _path(entry: tuple, end: int) -> list[tuple[int, int, int]]:
        stages = []
        while entry is not None:
            _, _, _, a, parent, kind, start = entry
            if parent is None:
                if a > 0:
                    stages.append((0, 0, a))
            else:
                stages.append((kind, start, end))
                end = start
            entry = parent
        return stages[::-1]

    def _solution(self, cost: float, stages: list[tuple[int, int, int]]) -> Solution:
        hops, n = self.inst.hops, self.n
        codecs = []
        for pos, (k, _, j) in enumerate(stages):
            nxt = stages[pos + 1][0] if pos + 1 < len(stages) else 0
            codecs.append(hops[(k, nxt)][j].codec if (k, j) != (0, n) and (k != 0 or nxt != 0) else "raw")
        return Solution(cost, tuple(stages), tuple(codecs))


def _insert(front: list[tuple], new: tuple, counts_bind: list[bool], a_matters: bool) -> None:
    """Add `new` to a Pareto front unless an entry is no worse in every coordinate; drop what it beats."""
    c, m, used, a = new[0], new[1], new[2], new[3]

    def no_worse(x: tuple, y_cost: float, y_m: float, y_used: tuple, y_a: int) -> bool:
        if x[0] > y_cost or x[1] > y_m or (a_matters and x[3] > y_a):
            return False
        xu = x[2]
        return all(xu[k] <= y_used[k] for k in range(len(xu)) if counts_bind[k])

    for old in front:
        if no_worse(old, c, m, used, a):
            return
    front[:] = [old for old in front if not no_worse(new, old[0], old[1], old[2], old[3])]
    front.append(new)
