"""The planner: solver time at the issue's sizes, and the chosen plan against the baselines.

    python benchmarks/planner.py [--repeats 3] [--random 10] [--out out/planner.json]

Sizes: 32 units (SmolLM2, 30 blocks) over 8 devices that all differ, and 82 units (an 80-block
model) over 64 devices of 4 kinds (the edge and 3 server kinds of 21), each under the latency and
the throughput objective; then `--random` random clusters of each size (median, p90, max). Times are
build + solve (the baselines are not included), the median of `--repeats` runs. Scenarios compare the
plan's predicted objective with each baseline's (ratio = baseline / plan; > 1: the plan is faster).
Prints tables, writes JSON, ends with one summary line.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import time
from pathlib import Path

from partition.plan import make_plan
from partition.plan.cluster import GB, Cluster, Device
from partition.plan.codecs import DEFAULT_CODECS
from partition.plan.instance import build_instance
from partition.plan.solver import solve
from partition.plan.synthetic import link_pair, star_cluster, synthetic_profile
from partition.types import DEFAULT_PINNING, LinkProfile, ModelRef, Workload

BIG = ModelRef("llama-70b-like", "synthetic-80-blocks", 80)
BIG_BLOCK = 850_000_000  # bytes: an 8-bit block of a 70B model
BIG_EMBED = 1_050_000_000  # bytes: 128k x 8192 at 8 bits


def big_profile(name: str, speed: float):
    return synthetic_profile(
        name, speed=speed, model=BIG, hidden=8192, block_weight_bytes=BIG_BLOCK, embed_weight_bytes=BIG_EMBED
    )


def mesh(devices: list[Device], link_of) -> Cluster:
    links: list[LinkProfile] = []
    for i, a in enumerate(devices):
        for b in devices[i + 1 :]:
            links.extend(link_pair(a.name, b.name, *link_of(a, b)))
    return Cluster(tuple(devices), tuple(links))


def eight_devices(rng: random.Random | None = None) -> Cluster:
    """A phone and 7 different servers (speeds, memories and links all differ): 32 units x 8 devices."""
    speeds = [6.0, 2.5, 10.0, 1.5, 4.0, 8.0, 3.0]
    memories = [0.25, 0.45, 0.15, 0.6, 0.3, 0.2, 0.35]  # GB: each holds 10 to 40 blocks
    if rng is not None:
        speeds = [rng.uniform(0.5, 12) for _ in speeds]
        memories = [rng.uniform(0.08, 0.6) for _ in memories]
    devices = [Device("phone", "edge", synthetic_profile("phone", speed=0.3), int(0.5 * GB))]
    devices += [
        Device(f"s{i}", "server", synthetic_profile(f"s{i}", speed=s), int(m * GB))
        for i, (s, m) in enumerate(zip(speeds, memories, strict=True))
    ]
    pick = random.Random(7) if rng is None else rng
    choices = {
        (a.name, b.name): (pick.choice([50, 200, 1000, 10000]), pick.uniform(0.2, 8))
        for a in devices
        for b in devices
    }
    return mesh(devices, lambda a, b: choices[(a.name, b.name)])


def sixty_four_devices(rng: random.Random | None = None) -> Cluster:
    """An edge and 3 kinds of 21 servers for an 80-block model: 82 units x 64 devices of 4 kinds."""
    kinds = [("a100", 30.0, 12 * GB), ("l4", 8.0, 20 * GB), ("cpu", 1.0, 64 * GB)]
    if rng is not None:
        kinds = [(name, rng.uniform(0.5, 30), int(rng.choice([6, 12, 24, 80]) * GB)) for name, _, _ in kinds]
    devices = [Device("edge", "edge", big_profile("edge", 0.2), 16 * GB)]
    for name, speed, memory in kinds:
        profile = big_profile(name, speed)
        devices += [Device(f"{name}-{i}", "server", profile, memory) for i in range(21)]
    kind_of = {d.name: d.name.split("-")[0] for d in devices}
    table = {  # per pair of kinds: (Mbit/s, ms)
        ("edge", "a100"): (1000, 5), ("edge", "l4"): (1000, 5), ("edge", "cpu"): (1000, 2),
        ("a100", "a100"): (100_000, 0.02), ("l4", "l4"): (25_000, 0.1), ("cpu", "cpu"): (10_000, 0.2),
        ("a100", "l4"): (25_000, 0.1), ("a100", "cpu"): (10_000, 0.3), ("l4", "cpu"): (10_000, 0.3),
    }  # fmt: skip
    if rng is not None:
        table = {
            key: (rng.choice([100, 1000, 10_000, 100_000]), rng.choice([0.02, 0.2, 2, 10])) for key in table
        }

    def link(a: Device, b: Device):
        ka, kb = kind_of[a.name], kind_of[b.name]
        return table.get((ka, kb)) or table[(kb, ka)]

    return mesh(devices, link)


def solve_time(cluster: Cluster, w: Workload, repeats: int) -> tuple[float, int]:
    """Median seconds of build + solve, and the number of stages chosen."""
    times, stages = [], 0
    for _ in range(repeats):
        start = time.perf_counter()
        solution = solve(build_instance(cluster, w, DEFAULT_CODECS, DEFAULT_PINNING))
        times.append(time.perf_counter() - start)
        stages = len(solution.stages) if solution else 0
    return statistics.median(times), stages


WORKLOADS = {
    "latency": Workload(prompt_tokens=256, new_tokens=128),
    "throughput S=8": Workload(prompt_tokens=256, new_tokens=128, sessions=8, objective="throughput"),
}
SIZES = {
    "32 units x 8 devices": (eight_devices, 1.0),
    "82 units x 64 devices, 4 kinds": (sixty_four_devices, 5.0),
}


def timing_section(repeats: int, n_random: int) -> list[dict]:
    rows = []
    for size, (build, limit) in SIZES.items():
        for label, w in WORKLOADS.items():
            seconds, stages = solve_time(build(), w, repeats)
            rows.append(
                {
                    "size": size,
                    "objective": label,
                    "cluster": "fixed",
                    "seconds": seconds,
                    "limit_s": limit,
                    "stages": stages,
                }
            )
            if n_random:
                rng = random.Random(1)
                samples = sorted(solve_time(build(rng), w, 1)[0] for _ in range(n_random))
                rows.append({
                    "size": size, "objective": label, "cluster": f"{n_random} random",
                    "seconds": samples[-1], "median_s": statistics.median(samples),
                    "p90_s": samples[int(0.9 * (len(samples) - 1))], "limit_s": limit,
                })  # fmt: skip
    return rows


def scenarios() -> dict[str, tuple[Cluster, Workload]]:
    phone = synthetic_profile("phone", speed=0.3)
    laptop = synthetic_profile("laptop", speed=1.0)
    gpu = synthetic_profile("gpu", speed=12.0)
    mini = synthetic_profile("mini", speed=3.0)
    w = Workload(256, 128)
    return {
        "phone + GPU server over WiFi (100 Mbit/s, 10 ms)": (
            star_cluster(phone, 2.0, [("gpu", gpu, 16.0)], (100, 10)),
            w,
        ),
        "laptop + GPU over a slow uplink (2 Mbit/s, 60 ms)": (
            star_cluster(laptop, 8.0, [("gpu", gpu, 16.0)], (2, 60)),
            w,
        ),
        "phone + 3 small servers (each < half the model), LAN": (
            star_cluster(phone, 0.3, [(f"mini-{i}", mini, 0.25) for i in range(3)], (1000, 1), (10000, 0.2)),
            w,
        ),
        "phone + GPU + mini, 8 sessions, throughput": (
            star_cluster(phone, 2.0, [("gpu", gpu, 16.0), ("mini", mini, 4.0)], (1000, 1), (10000, 0.2)),
            Workload(256, 128, sessions=8, objective="throughput"),
        ),
        "32 units x 8 devices (latency)": (eight_devices(), WORKLOADS["latency"]),
        "82 units x 64 devices (latency)": (sixty_four_devices(), WORKLOADS["latency"]),
        "82 units x 64 devices (throughput S=8)": (sixty_four_devices(), WORKLOADS["throughput S=8"]),
    }


def ratio_section() -> list[dict]:
    rows = []
    for name, (cluster, w) in scenarios().items():
        plan = make_plan(cluster, w)
        row = {
            "scenario": name,
            "objective": w.objective,
            "plan_s": plan.predicted.objective_s,
            "plan_stages": [[s.device, s.segment.start, s.segment.end, s.codec_out] for s in plan.stages],
            "baselines": {},
        }
        for b in plan.baselines:
            row["baselines"][b.name] = (
                {
                    "objective_s": b.predicted.objective_s,
                    "ratio": b.predicted.objective_s / plan.predicted.objective_s,
                }
                if b.predicted
                else {"infeasible": b.infeasible}
            )
        rows.append(row)
    return rows


def print_tables(timing: list[dict], ratios: list[dict]) -> None:
    print(
        f"{'size':<32} {'objective':<16} {'cluster':<10} {'seconds':>9} {'median':>9} {'p90':>9} {'limit':>6}"
    )
    for r in timing:
        med = f"{r['median_s']:.3f}" if "median_s" in r else ""
        p90 = f"{r['p90_s']:.3f}" if "p90_s" in r else ""
        print(
            f"{r['size']:<32} {r['objective']:<16} {r['cluster']:<10} {r['seconds']:>9.3f} {med:>9} {p90:>9} "
            f"{r['limit_s']:>5.0f}s"
        )
    columns = {  # baseline -> its column's title
        "even": "even",
        "memory_proportional": "memory (exo)",
        "memory_proportional_edge_first": "memory edge first",
        "edge_only": "edge_only",
        "best_single_server": "best_single_server",
    }
    print(
        f"\n{'scenario (ratio = baseline / plan)':<56} {'plan':>9} "
        + " ".join(f"{title:>19}" for title in columns.values())
    )
    for r in ratios:
        cells = []
        for n in columns:
            b = r["baselines"][n]
            cells.append(f"{b['ratio']:>18.2f}x" if "ratio" in b else f"{'infeasible':>19}")
        print(f"{r['scenario'][:56]:<56} {r['plan_s']:>8.3f}s " + " ".join(cells))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs per fixed cluster (median)")
    parser.add_argument(
        "--random", type=int, default=10, help="random clusters per size and objective (0: none)"
    )
    parser.add_argument("--out", type=Path, default=Path("out/planner.json"))
    args = parser.parse_args()

    timing = timing_section(args.repeats, args.random)
    ratios = ratio_section()
    print_tables(timing, ratios)
    meta = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "processor": platform.processor(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "timing": timing, "scenarios": ratios}, indent=2))

    fixed = {(r["size"], r["objective"]): r["seconds"] for r in timing if r["cluster"] == "fixed"}
    worst = {size: max(s for (sz, _), s in fixed.items() if sz == size) for size in SIZES}
    within = all(worst[size] < limit for size, (_, limit) in SIZES.items())
    ratios_all = [b["ratio"] for r in ratios for b in r["baselines"].values() if "ratio" in b]
    print(
        f"\nplanner: 32x8 solved in {worst['32 units x 8 devices']:.3f} s (limit 1 s), 82x64 of 4 kinds in "
        f"{worst['82 units x 64 devices, 4 kinds']:.3f} s (limit 5 s) -> {'within' if within else 'OVER'} limits; "
        f"plan vs feasible baselines {min(ratios_all):.2f}x-{max(ratios_all):.2f}x; JSON in {args.out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
