"""Does the chosen split beat the splits other systems use? (plan -> serve -> metrics, in the emulated lab)

    python benchmarks/plan_quality.py [--configs wifi-edge lan wan] [--requests 5] [--json out/plan_quality.json]

For each lab config: `lab up`, profile, plan the demo's workload (40 prompt tokens, 32 new), then
`partition bench` from inside the edge the chosen plan and every feasible baseline of the same plan file
(`--baseline even | memory_proportional | edge_only | best_single_server`: the same workload, requests,
prompt and edge; each hop with the codec the planner would pick, so only the split differs). Medians of
--requests requests after a discarded warm-up. Prints measured TPOT and TTFT of every split with its
ratio to the chosen plan, beside the prediction.
Targets: the chosen plan's TPOT at most 5 % above every baseline's, in every lab; in wifi-edge,
memory_proportional's TPOT at least 1.3x the chosen plan's. Needs root (the lab); ends with one summary line.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

from benchmarks.labkit import (
    LAB_CONFIGS,
    MODEL,
    NEW_TOKENS,
    PROMPT_TOKENS,
    bench,
    lab_up,
    load_average,
    make_plan,
    profile,
    stages_text,
)

SLACK = 0.05  # the plan's TPOT may be this much above a baseline's
WIFI_GAIN = 1.3  # memory_proportional TPOT / plan TPOT in wifi-edge, at least


def splits_of(plan_path: Path) -> list[tuple[str, str | None]]:
    """("plan", None) and (name, name) for every feasible baseline, and (name, reason) for the others."""
    from partition.artifacts import load_plan

    plan = load_plan(plan_path)
    out: list[tuple[str, str | None]] = [("plan", None)]
    for baseline in plan.baselines:
        out.append((baseline.name, None if baseline.predicted is None else baseline.name))
    return out


def run_config(name: str, workdir: Path, requests: int) -> dict:
    print(f"\n== {name}", flush=True)
    started = time.perf_counter()
    rows = []
    with lab_up(LAB_CONFIGS[name], workdir) as lab:
        cluster = profile(lab, MODEL, workdir)
        plan = make_plan(MODEL, cluster, workdir / "plan.json")
        for split, baseline in splits_of(plan):
            if split != "plan" and baseline is None:
                rows.append({"split": split, "infeasible": True})
                continue
            report = bench(lab, plan, cluster, workdir / f"bench-{split}.json", requests, baseline=baseline)
            by_name = {row["name"]: row for row in report["predicted_vs_measured"]}
            rows.append(
                {
                    "split": split,
                    "infeasible": False,
                    "stages": report["stages"],
                    "tpot_s": by_name["TPOT"]["measured_s"],
                    "ttft_s": by_name["TTFT"]["measured_s"],
                    "predicted_tpot_s": by_name["TPOT"]["predicted_s"],
                    "predicted_ttft_s": by_name["TTFT"]["predicted_s"],
                    "tpot_p90_s": report["metrics"]["tpot_s"]["p90"],
                }
            )
    chosen = rows[0]
    for row in rows:
        if not row["infeasible"]:
            row["tpot_vs_plan"] = row["tpot_s"] / chosen["tpot_s"]
            row["ttft_vs_plan"] = row["ttft_s"] / chosen["ttft_s"]
            row["same_split_as_plan"] = [s[:3] for s in row["stages"]] == [s[:3] for s in chosen["stages"]]
    measured = [r for r in rows[1:] if not r["infeasible"]]
    best = min(measured, key=lambda r: r["tpot_s"]) if measured else None
    result = {
        "config": name,
        "splits": rows,
        "best_baseline": best["split"] if best else None,
        # the plan no worse than SLACK above any baseline
        "plan_within_slack": best is None or chosen["tpot_s"] <= (1 + SLACK) * best["tpot_s"],
        "seconds": time.perf_counter() - started,
        "artifacts": str(workdir),
    }
    if name == "wifi-edge":
        memory = next((r for r in measured if r["split"] == "memory_proportional"), None)
        result["memory_proportional_gain"] = memory["tpot_vs_plan"] if memory else None
    print_table(result)
    return result


def print_table(result: dict) -> None:
    print(
        f"  {'split':<20} {'stages':<46} {'TPOT':>9} {'x plan':>7} {'pred.':>9} "
        f"{'TTFT':>9} {'x plan':>7} {'pred.':>9}"
    )
    for row in result["splits"]:
        if row["infeasible"]:
            print(f"  {row['split']:<20} infeasible (the planner says why in plan.log)")
            continue
        same = " (= plan)" if row["split"] != "plan" and row["same_split_as_plan"] else ""
        print(
            f"  {row['split']:<20} {stages_text(row['stages']) + same:<46} {row['tpot_s'] * 1e3:7.1f}ms "
            f"{row['tpot_vs_plan']:6.2f}x {row['predicted_tpot_s'] * 1e3:7.1f}ms {row['ttft_s'] * 1e3:7.1f}ms "
            f"{row['ttft_vs_plan']:6.2f}x {row['predicted_ttft_s'] * 1e3:7.1f}ms"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--configs", nargs="+", choices=list(LAB_CONFIGS), default=list(LAB_CONFIGS))
    parser.add_argument("--requests", type=int, default=5, help="measured requests per split (median)")
    parser.add_argument("--workdir", type=Path, default=Path("out/plan_quality"))
    parser.add_argument("--json", type=Path, default=Path("out/plan_quality.json"))
    args = parser.parse_args(argv)

    load = load_average()
    results = [run_config(name, args.workdir / name, args.requests) for name in args.configs]
    print(
        f"\n{MODEL}, {PROMPT_TOKENS} prompt tokens, {NEW_TOKENS} new, median of {args.requests} requests per "
        "split, bench run inside the edge; x plan = the split's time / the chosen plan's"
    )
    for result in results:
        print(f"{result['config']}:")
        print_table(result)
    wifi = next((r for r in results if r["config"] == "wifi-edge"), None)
    gain = wifi.get("memory_proportional_gain") if wifi else None
    gain_met = gain is None or gain >= WIFI_GAIN
    met = all(r["plan_within_slack"] for r in results) and gain_met
    report = {
        "model": MODEL,
        "requests": args.requests,
        "slack": SLACK,
        "wifi_gain_target": WIFI_GAIN,
        "machine": platform.processor() or platform.machine(),
        "load_average_before": load,
        "labs": results,
        "met": met,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))

    def closest(r: dict) -> str:
        measured = [s for s in r["splits"][1:] if not s["infeasible"]]
        if not measured:
            return f"{r['config']}: no baseline"
        best = min(measured, key=lambda s: s["tpot_vs_plan"])
        return f"{r['config']} best baseline {best['split']} at {best['tpot_vs_plan']:.2f}x"

    print(
        f"plan_quality: plan TPOT within {SLACK:.0%} of every baseline in "
        f"{sum(r['plan_within_slack'] for r in results)}/{len(results)} labs ("
        + "; ".join(closest(r) for r in results)
        + ")"
        + (
            f"; wifi-edge memory_proportional {gain:.2f}x (target >= {WIFI_GAIN}x)"
            if gain is not None
            else ""
        )
        + f"; target {'met' if met else 'MISSED'}; JSON in {args.json}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
