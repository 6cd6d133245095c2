"""The exact solver against enumeration of every chain and codec on 500 random clusters."""

import math
from collections import Counter

import pytest
from plan_kit import random_cases

from partition.errors import InfeasiblePlanError
from partition.plan import chain_problem, evaluate, make_plan
from partition.plan.instance import build_instance, device_kinds
from partition.plan.planner import to_stages
from partition.plan.solver import solve

N_CASES = 500


@pytest.fixture(scope="module")
def cases():
    return list(random_cases(seed=20250101, count=N_CASES, budget=30_000))


def test_cases_cover_the_space(cases):
    seen = Counter()
    for (cluster, w, _, pin), best in cases:
        seen["12 units"] += cluster.model.n_units == 12
        seen["6 devices"] += len(cluster.devices) == 6
        seen["identical servers"] += any(len(kind) > 1 for kind in device_kinds(cluster))
        seen["throughput, S > 1"] += w.objective == "throughput" and w.sessions > 1
        seen["no pin"] += not pin.embed
        seen["head may leave the edge"] += not pin.head
        seen["infeasible"] += best is None
        seen["uses 2+ servers"] += best is not None and len({s.device for s in best[1]}) >= 3
    assert len(cases) == N_CASES
    assert all(count >= 10 for count in seen.values()), seen


def test_solver_matches_brute_force(cases):
    for index, ((cluster, w, codecs, pin), best) in enumerate(cases):
        instance = build_instance(cluster, w, codecs, pin)
        for shortcut in (True, False):
            solution = solve(instance, shortcut=shortcut)
            if best is None:
                assert solution is None, f"case {index}: solver found a chain where none fits"
                continue
            assert solution is not None, f"case {index}: solver found nothing, brute force {best[1]}"
            assert math.isclose(solution.objective, best[0], rel_tol=1e-9), (index, shortcut, solution, best)


def test_a_search_held_to_one_partial_chain_per_cut_still_plans_validly_and_says_so(cases, monkeypatch):
    """Past its front limit the search drops its costliest partial chains: the chain it returns is
    valid and no better than the optimum, it is marked not proven, and it says "no chain" only where
    none fits (a search that found nothing after dropping some looks again, wider)."""
    import partition.plan.solver as solver

    monkeypatch.setattr(solver, "FRONT_LIMIT", 1)
    inexact = 0
    for index, ((cluster, w, codecs, pin), best) in enumerate(cases):
        instance = build_instance(cluster, w, codecs, pin)
        solution = solve(instance, shortcut=False)
        if best is None:
            assert solution is None, index
            continue
        assert solution is not None, f"case {index}: a chain fits, brute force {best[1]}"
        stages = to_stages(instance.kinds, solution)
        assert chain_problem(cluster, stages, w, pin) == "", index
        assert solution.objective >= best[0] * (1 - 1e-9), index
        if solution.exact:
            assert math.isclose(solution.objective, best[0], rel_tol=1e-9), index
        inexact += not solution.exact
    assert inexact >= 50  # the limit was reached, not just set


def test_plans_are_valid_and_predicted_like_the_brute_force(cases):
    for index, ((cluster, w, codecs, pin), best) in enumerate(cases):
        if best is None:
            with pytest.raises(InfeasiblePlanError):
                make_plan(cluster, w, codecs, pin)
            continue
        plan = make_plan(cluster, w, codecs, pin)
        assert chain_problem(cluster, plan.stages, w, pin) == "", index
        assert math.isclose(plan.predicted.objective_s, best[0], rel_tol=1e-9), index
        # the brute force's own arithmetic agrees with the cost model's evaluate
        assert math.isclose(evaluate(cluster, best[1], w, codecs).objective_s, best[0], rel_tol=1e-9), index
