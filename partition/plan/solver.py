"""The exact solver (plan): the best chain of contiguous segments from the edge, through servers, back.

A chain is: the edge runs units [0, a), servers (each used at most once, in any order) run [a, b) in
contiguous segments, the edge runs [b, n). Its cost is a sum over stages and hops plus, under the
throughput objective, W x its largest pipeline item (Alpa: sum + (B - 1) x max, with B = S, W = S - 1).
This is the chain DP of REFERENCES.md, F(j, k) = min_i combine(F(i, k'), hop(i), stage(i, j)), made
exact for devices that may each be used once:

- min_sum(cap): the least sum over chains whose items are all <= cap.
  1. A relaxed DP (devices reusable, the edge's two pieces checked apart) run backwards gives, for
     every cut and kind, a lower bound on the cost still to come. If its optimum is a valid chain, no
     chain beats it (the common case).
  2. Otherwise a forward DP keeps, per (cut, last kind), the Pareto front of partial chains over
     (cost so far, devices used per kind, edge prefix); a partial chain is dropped when another is no
     worse in all three (it can then be completed no worse) or when cost + bound reaches the best
     complete chain (branch and bound). Neither rule drops a chain that could beat one kept.
     Counts and the edge's coupling enter lazily: first only those the relaxed optimum breaks, more
     when the search's optimum breaks others (each search solves a relaxation, so an optimum that
     breaks nothing is the optimum), and all of them after MAX_LAZY_ROUNDS.
- Throughput (W > 0), Alpa's enumeration of the largest item T: the optimum is min over T of
  min_sum(T) + W x T, where T ranges over the values items can take. A divide and conquer over the
  sorted values skips every range whose lower bound min_sum(upper end) + W x (lower end) cannot win.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from dataclasses import dataclass

from partition.plan.instance import Instance, KindTable

INF = math.inf
MAX_LAZY_ROUNDS = 2  # searches that add only the constraints found broken, before adding every one
# Partial chains kept per (cut, last kind) before the costliest are dropped. A front grows with the
# subsets of servers a chain may have used: many small servers, each of its own kind (profiled one by
# one, no two profiles alike), make it exponential (10 servers holding 5 blocks each: 372 entries,
# 5.8 s to plan; 12: 90 s, 14: over 10 min). The benchmarks' clusters stay under 20 entries. Past it
# the plan is the best found, not proven optimal, and says so (with 64: 10 servers in 2.6 s, 12 in
# 2.5 s, 14 in 3.5 s; at 10, the same plan as the exact search). A search that finds no chain after
# dropping some runs again with four times the limit: "no chain" is only ever said exactly.
FRONT_LIMIT = 64
Chain = list[tuple[int, int, int]]  # (kind, start, end) per stage; kind 0 is the edge


@dataclass(frozen=True)
class Solution:
    objective: float  # seconds: the workload's objective (total_s or round_s)
    stages: tuple[tuple[int, int, int], ...]  # (kind, start, end) in chain order; kind 0 is the edge
    codecs: tuple[str, ...]  # codec_out of each stage ("raw" where it sends token ids, logits or nothing)
    exact: bool = True  # False: the search dropped partial chains past FRONT_LIMIT (best found, not proven)


def solve(inst: Instance, shortcut: bool = True) -> Solution | None:
    """The optimal chain, or None when no chain satisfies memory, links and pinning.

    `shortcut=False` never stops at the relaxation's optimum (tests use it to check the search alone).
    """
    return _Solver(inst, shortcut).run()


class _Solver:
    def __init__(self, inst: Instance, shortcut: bool) -> None:
        self.inst, self.shortcut = inst, shortcut
        n, kinds = inst.n, inst.kinds
        self.n, self.kinds, self.W, self.K = n, kinds, inst.weight, len(kinds)
        edge = kinds[0]
        lo, hi = inst.pin.server_units(n)
        self.lo, self.hi = lo, hi
        self.prefix_ok = [lo <= a < hi and edge.mem[a] <= edge.cap for a in range(n + 1)]
        self.suffix_mem = [edge.mem[n] - edge.mem[b] for b in range(n + 1)]
        self.suffix_ok = [lo < b <= hi and self.suffix_mem[b] <= edge.cap for b in range(n + 1)]
        # Largest end j of a segment [i, j) that fits one device of kind k (servers only).
        self.jmax = [list(range(n + 1))] + [self._reach(kind) for kind in kinds[1:]]
        self.edge_only_ok = self.segment_mem(edge, 0, n) <= edge.cap
        self.exact = True  # False once a search dropped partial chains past its front limit
        self.front_limit = FRONT_LIMIT
        self._dropped = False  # the last search dropped some

    def segment_mem(self, kind: KindTable, i: int, j: int) -> int:
        """Bytes of one segment [i, j) on a device of `kind` (the whole model holds tied weights once)."""
        return kind.mem[j] - kind.mem[i] - (kind.tied_saves if (i, j) == (0, self.n) else 0)

    def edge_pieces_mem(self, a: int, b: int) -> int:
        """Bytes of the edge's front [0, a) and tail [b, n) together: with both, one process holds the
        embedding and the head, and the tied matrix once. a == n: the whole model, one piece."""
        if a == self.n:
            return self.segment_mem(self.kinds[0], 0, self.n)
        both = a > 0 and b < self.n
        return self.kinds[0].mem[a] + self.suffix_mem[b] - (self.kinds[0].tied_saves if both else 0)

    def _reach(self, kind: KindTable) -> list[int]:
        """For each start i, the largest j such that [i, j) fits one device of `kind` (j == i: not even
        one unit)."""
        out, j = list(range(self.n + 1)), self.lo
        for i in range(self.lo, self.hi):
            j = max(j, i)  # memory only grows with j, so the reach of i + 1 starts where i's ended
            while j < self.hi and self.segment_mem(kind, i, j + 1) <= kind.cap:
                j += 1
            out[i] = j
        return out

    def run(self) -> Solution | None:
        found = self.min_sum(INF) if self.W == 0 else self.alpa()
        if found is None:
            return None
        total, items = self.value(found)
        return self._solution(total + self.W * items, found)

    # -- a complete chain ------------------------------------------------------------------------
    def value(self, chain: Chain) -> tuple[float, float]:
        """(sum, largest item) of a valid chain."""
        kinds, hops, n = self.kinds, self.inst.hops, self.n
        total, items, edge_item, prev = 0.0, [], 0.0, 0
        for pos, (k, i, j) in enumerate(chain):
            kind = kinds[k]
            if pos > 0 or k != 0:
                hop = hops[(prev, k)][i]
                total += hop.cost
                items.append(hop.item)
            total += kind.cost[j] - kind.cost[i]
            if k == 0:
                edge_item += kind.item[j] - kind.item[i]  # the edge's two stages share its compute
            else:
                items.append(kind.item[j] - kind.item[i])
            prev = k
        if prev != 0:
            hop = hops[(prev, 0)][n]
            total += hop.cost
            items.append(hop.item)
        return total, max([edge_item, *items])

    def violations(self, chain: Chain) -> tuple[set[int], bool]:
        """What a chain of a relaxation breaks: kinds used more often than they have devices, and
        whether the edge's two pieces together overflow its memory (the items' cap is checked apart)."""
        used = [0] * self.K
        front, tail = 0, self.n  # the edge's pieces: [0, front) and [tail, n)
        for k, i, j in chain:
            if k == 0:
                front, tail = (j, tail) if i == 0 else (front, i)
            else:
                used[k] += 1
        over = {k for k in range(1, self.K) if used[k] > len(self.kinds[k].devices)}
        return over, self.edge_pieces_mem(front, tail) > self.kinds[0].cap

    def valid(self, chain: Chain, cap: float) -> bool:
        over, edge_overflows = self.violations(chain)
        return not over and not edge_overflows and self.value(chain)[1] <= cap

    # -- min_sum: the least sum with every item <= cap ---------------------------------------------
    def min_sum(self, cap: float, bound: float = INF) -> Chain | None:
        """The chain of least sum with every item <= cap, if that sum is below `bound`; else None."""
        edge, n = self.kinds[0], self.n
        best_cost, best = bound, None
        if self.edge_only_ok and edge.item[n] <= cap and edge.cost[n] < best_cost:
            best_cost, best = edge.cost[n], [(0, 0, n)]
        R, choice = self.relax(cap)
        relaxed = self.relaxed_chain(R, choice)
        if relaxed is None or relaxed[0] >= best_cost:
            return best
        if self.shortcut and self.valid(relaxed[1], cap):
            return relaxed[1]
        # Constraints enter the search only once a relaxed optimum breaks them (lazily): every count
        # tracked splits the Pareto fronts, so tracking only the binding ones keeps them small.
        over, edge_overflows = self.violations(relaxed[1])
        tracked, coupled = over, edge_overflows or self.value(relaxed[1])[1] > cap
        if not self.shortcut:
            tracked, coupled = set(range(1, self.K)), True
        rounds = 0
        while True:
            found = self.search(best_cost, R, cap, tracked, coupled)
            if found is None and self._dropped:  # what was dropped may have been the only way through
                self.front_limit *= 4
                continue
            if found is None:
                return best
            if self.valid(found[1], cap):
                return found[1]
            over, edge_overflows = self.violations(found[1])
            assert over - tracked or (edge_overflows or self.value(found[1])[1] > cap) and not coupled
            tracked, coupled = tracked | over, coupled or edge_overflows or self.value(found[1])[1] > cap
            rounds += 1
            if rounds >= MAX_LAZY_ROUNDS:  # constraints keep surfacing one by one: take them all at once
                tracked, coupled = set(range(1, self.K)), True

    def relax(self, cap: float) -> tuple[list[list[float]], list[list]]:
        """Backward DP with devices reusable and every item at most `cap`.

        R[k][i]: least cost to finish from cut i after a device of kind k (the edge's suffix checked on
        its own); choice[k][i]: the argmin, (next kind, end) or (0, i) for going back to the edge.
        """
        n, K, kinds, hops = self.n, self.K, self.kinds, self.inst.hops
        edge = kinds[0]
        R = [[INF] * (n + 1) for _ in range(K)]
        choice: list[list[tuple[int, int] | None]] = [[None] * (n + 1) for _ in range(K)]
        for i in range(n, -1, -1):
            best_from = [(INF, 0)] * K  # per next kind: (cost of [i, j) + R at j, best j)
            for k2 in range(1, K):
                kind, r2 = kinds[k2], R[k2]
                c_i, t_i = kind.cost[i], kind.item[i]
                best, arg = INF, 0
                for j in range(i + 1, self.jmax[k2][i] + 1):
                    if kind.item[j] - t_i > cap:
                        break
                    v = kind.cost[j] - c_i + r2[j]
                    if v < best:
                        best, arg = v, j
                best_from[k2] = (best, arg)
            for k in range(K):
                best, arg = INF, None
                back = hops.get((k, 0)) if k else None
                if (
                    back is not None
                    and self.suffix_ok[i]
                    and back[i].item <= cap
                    and edge.item[n] - edge.item[i] <= cap
                ):
                    best, arg = back[i].cost + edge.cost[n] - edge.cost[i], (0, i)
                for k2 in range(1, K):
                    options = hops.get((k, k2))
                    if options is None or best_from[k2][0] == INF or options[i].item > cap:
                        continue
                    v = options[i].cost + best_from[k2][0]
                    if v < best:
                        best, arg = v, (k2, best_from[k2][1])
                R[k][i], choice[k][i] = best, arg
        return R, choice

    def relaxed_chain(self, R: list[list[float]], choice: list[list]) -> tuple[float, Chain] | None:
        """The relaxation's optimum through at least one server as (cost, chain), or None."""
        edge = self.kinds[0]
        best, start = INF, None
        for a in range(self.n + 1):
            if self.prefix_ok[a] and edge.cost[a] + R[0][a] < best:
                best, start = edge.cost[a] + R[0][a], a
        if start is None:
            return None
        chain = [(0, 0, start)] if start > 0 else []
        k, i = 0, start
        while True:
            k2, j = choice[k][i]
            if k2 == 0:
                return best, chain + ([(0, j, self.n)] if j < self.n else [])
            chain.append((k2, i, j))
            k, i = k2, j

    def search(
        self, bound: float, R: list[list[float]], cap: float, tracked: set[int], coupled: bool
    ) -> tuple[float, Chain] | None:
        """The least-sum chain through servers that beats `bound` with items <= cap, or None, in the
        relaxation that enforces device counts only for the kinds in `tracked`, and the edge's
        prefix + suffix limits (memory, item) only when `coupled` (each piece alone always).

        The devices used per tracked kind and the edge prefix `a` are packed into one integer, a field
        per quantity with a guard bit on top, so that "no more of anything" is one subtraction (SWAR).
        """
        n, K, kinds, hops, jmax = self.n, self.K, self.kinds, self.inst.hops, self.jmax
        edge = kinds[0]
        offsets, limits, guard, width = [0] * K, [0] * K, 0, 0
        for k in sorted(tracked):
            limits[k] = len(kinds[k].devices)
            offsets[k], width = width, width + limits[k].bit_length() + 1
            guard |= 1 << (width - 1)
        a_shift = width if coupled else None
        if coupled:
            guard |= 1 << (width + n.bit_length())
        eps = 1e-12 * max(1.0, abs(bound)) if bound < INF else 0.0
        best: tuple[float, Chain] | None = None
        limit, self._dropped = self.front_limit, False
        # fronts[i][k] = (costs, entries) sorted by cost; entry = (cost, resources, a, parent, kind, start)
        fronts = [[([], []) for _ in range(K)] for _ in range(n + 1)]
        for a in range(n):
            if self.prefix_ok[a] and edge.item[a] <= cap:
                resources = 0 if a_shift is None else a << a_shift
                if _insert(fronts[a][0], (edge.cost[a], resources, a, None, 0, 0), guard, limit):
                    self.exact, self._dropped = False, True
        for i in range(n + 1):
            suffix_item = edge.item[n] - edge.item[i]
            for k in range(K):
                for entry in fronts[i][k][1]:
                    cost, used, a = entry[0], entry[1], entry[2]
                    if cost + R[k][i] >= bound - eps:
                        continue
                    back = hops.get((k, 0)) if k else None
                    if (
                        back is not None
                        and self.suffix_ok[i]
                        and back[i].item <= cap
                        and suffix_item <= cap
                        and not (
                            coupled
                            and (self.edge_pieces_mem(a, i) > edge.cap or edge.item[a] + suffix_item > cap)
                        )
                    ):
                        total = cost + back[i].cost + edge.cost[n] - edge.cost[i]
                        if total < bound - eps:
                            bound, eps = total, 1e-12 * max(1.0, abs(total))
                            best = (total, self._path(entry, i) + ([(0, i, n)] if i < n else []))
                    for k2 in range(1, K):
                        options = hops.get((k, k2))
                        if options is None or options[i].item > cap:
                            continue
                        used2 = used
                        if limits[k2]:
                            if (used >> offsets[k2]) & ((1 << limits[k2].bit_length()) - 1) >= limits[k2]:
                                continue
                            used2 = used + (1 << offsets[k2])
                        kind, r2 = kinds[k2], R[k2]
                        base = cost + options[i].cost - kind.cost[i]
                        t_i = kind.item[i]
                        for j in range(i + 1, jmax[k2][i] + 1):
                            if kind.item[j] - t_i > cap:
                                break
                            c = base + kind.cost[j]
                            if c + r2[j] < bound - eps and _insert(
                                fronts[j][k2], (c, used2, a, entry, k2, i), guard, limit
                            ):
                                self.exact, self._dropped = False, True
                fronts[i][k] = ([], [])  # done with this cut; free memory
        return best

    @staticmethod
    def _path(entry: tuple, end: int) -> Chain:
        stages = []
        while entry is not None:
            _, _, a, parent, kind, start = entry
            if parent is None:
                if a > 0:
                    stages.append((0, 0, a))
            else:
                stages.append((kind, start, end))
                end = start
            entry = parent
        return stages[::-1]

    # -- throughput: Alpa's enumeration of the largest item ------------------------------------------
    def alpa(self) -> Chain | None:
        W = self.W
        least = self.min_sum(INF)  # the least sum of all: a lower bound on every chain's sum
        if least is None:
            return None
        least_sum, items = self.value(least)
        # A chain with largest item T costs at least least_sum + W x T, so only T below the least-sum
        # chain's own largest item can beat it.
        candidates = self.item_values(items)
        known: list[tuple[float, float, Chain]] = [(least_sum, items, least)]  # (sum, largest item, chain)
        best = [least_sum + W * items, least]
        # index -> (min_sum, largest item of a chain achieving it), or a float: min_sum is no less than it
        solved: dict[int, tuple[float, float] | float] = {}

        def at(index: int, limit: float) -> tuple[float, float] | None:
            """(min_sum, largest item of a chain achieving it) at cap candidates[index], or None when
            min_sum >= limit (then nothing at this cap or below can win)."""
            got = solved.get(index)
            if isinstance(got, tuple):
                return got if got[0] < limit else None
            if got is not None and got >= limit:
                return None
            cap = candidates[index]
            # A chain met earlier that fits this cap bounds the search from above.
            incumbent = min(((t, m) for t, m, _ in known if m <= cap), default=(INF, INF))
            chain = self.min_sum(cap, min(limit, incumbent[0]))
            if chain is not None:
                total, largest = self.value(chain)
                known.append((total, largest, chain))
                if total + W * largest < best[0]:
                    best[:] = [total + W * largest, chain]
                solved[index] = (total, largest)
            elif incumbent[0] < limit:
                solved[index] = incumbent  # nothing beats the incumbent: it is the min_sum
            else:
                solved[index] = limit
                return None
            return solved[index]

        # Ranges [lo, hi] of candidate indices with a lower bound on min_sum over the range.
        todo = [(0, len(candidates) - 1, least_sum)]
        while todo:
            lo, hi, below = todo.pop()
            if lo > hi or below + W * candidates[lo] >= best[0]:
                continue
            top = at(hi, best[0] - W * candidates[lo])
            if top is None:
                continue  # every cap in the range leaves a sum too large to win
            mid = (lo + hi) // 2
            here = at(mid, best[0] - W * candidates[lo])
            if here is None:
                todo.append((mid + 1, hi - 1, top[0]))
                continue
            # min_sum is constant from the achieving chain's own largest item up to candidates[mid].
            own = bisect_left(candidates, here[1] * (1 - 1e-12))
            todo.append((lo, own - 1, here[0]))
            todo.append((mid + 1, hi - 1, top[0]))
        return best[1]

    def item_values(self, limit: float) -> list[float]:
        """Every value up to `limit` that the largest item of a chain can take, sorted."""
        n, kinds, hops = self.n, self.kinds, self.inst.hops
        values = set()
        for k in range(1, self.K):
            item = kinds[k].item
            for i in range(self.lo, self.hi):
                for j in range(i + 1, self.jmax[k][i] + 1):
                    if item[j] - item[i] > limit:
                        break
                    values.add(item[j] - item[i])
        for options in hops.values():
            values.update(hop.item for hop in options if hop.item <= limit)
        edge = kinds[0].item
        # The edge's item summed exactly as `value` sums it (prefix piece, then suffix piece): a value
        # one rounding below a chain's own item would leave that chain out of min_sum at this cap.
        for a in range(n + 1):
            if self.prefix_ok[a] or a == 0:
                for b in range(n, a - 1, -1):
                    both = 0.0 + (edge[a] - edge[0]) + (edge[n] - edge[b])
                    if both > limit:
                        break
                    values.add(both)
        if self.edge_only_ok and edge[n] - edge[0] <= limit:
            values.add(0.0 + (edge[n] - edge[0]))
        return sorted(values)

    def _solution(self, cost: float, stages: Chain) -> Solution:
        hops, n = self.inst.hops, self.n
        codecs = []
        for pos, (k, _, j) in enumerate(stages):
            nxt = stages[pos + 1][0] if pos + 1 < len(stages) else 0
            codecs.append(hops[(k, nxt)][j].codec if j != n and (k != 0 or nxt != 0) else "raw")
        return Solution(cost, tuple(stages), tuple(codecs), self.exact)


def _insert(front: tuple[list[float], list[tuple]], new: tuple, guard: int, limit: int) -> bool:
    """Add `new` to a Pareto front unless an entry is no worse in every coordinate; drop what it beats.
    Past `limit` entries the costliest is dropped too, and the answer is True (the search is then no
    longer exact).

    No worse: cost <= and resources <= field by field, where x <= y exactly when ((y | guard) - x)
    keeps every guard bit.
    """
    costs, entries = front
    c, r = new[0], new[1]
    for index in range(bisect_right(costs, c)):
        if ((r | guard) - entries[index][1]) & guard == guard:
            return False
    index = bisect_left(costs, c)
    while index < len(entries):
        if ((entries[index][1] | guard) - r) & guard == guard:
            del entries[index], costs[index]
        else:
            index += 1
    at = bisect_right(costs, c)
    costs.insert(at, c)
    entries.insert(at, new)
    if len(entries) > limit:
        del costs[-1], entries[-1]
        return True
    return False
