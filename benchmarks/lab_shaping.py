"""What the emulated lab really delivers: each shipped config brought up with an echo server standing in
for the worker, then measured from inside the edge (as the coordinator sees it) and between servers.

    sudo python benchmarks/lab_shaping.py [--configs wifi-edge lan wan] [--json out/lab_shaping.json]

Per config: one-way delay (half the median round trip of 64 B), echoed throughput (payload Mbit/s, the
slower direction decides), and the edge's CPU share under a busy loop, each next to what the config
declares. Ends with one summary line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from partition import lab  # noqa: E402
from partition.lab.config import pair_link  # noqa: E402

ECHO = REPO / "tests" / "lab" / "echo_server.py"
NETPROBE = REPO / "tests" / "lab" / "netprobe.py"
BURN = (
    "import time\nstart = time.time(); cpu = time.process_time()\n"
    "while time.time() - start < 2.0: pass\nprint((time.process_time() - cpu) / (time.time() - start))"
)


def run_inside(state, device: str, argv: list[str]) -> str:
    command = lab.command_in(state, device, argv)
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=120, env=lab.lab.child_env(), check=True
    )
    return done.stdout


def probe(state, src: str, dst: str, port: int, total_bytes: int) -> dict:
    address = f"{state.devices[dst]['ip']}:{port}"
    result = json.loads(
        run_inside(state, src, [sys.executable, str(NETPROBE), address, "30", str(total_bytes)])
    )
    return {"one_way_ms": statistics.median(result["rtt_s"]) / 2 * 1e3, "mbps": result["mbps"]}


def measure(config_path: Path, state_dir: Path) -> dict:
    data = tomllib.loads(config_path.read_text())
    data["lab"]["worker_command"] = [sys.executable, str(ECHO), "{listen}"]
    config = lab.parse_lab_config(data, str(config_path))
    state = lab.up(config, state_dir, state_dir / f"{config.name}.cluster.toml")
    try:
        edge, servers = config.edge, [d for d in config.devices if d.role == "server"]
        rows = []
        pairs = [(edge, servers[0])] + ([(servers[0], servers[1])] if len(servers) > 1 else [])
        for a, b in pairs:
            mbps, delay_ms = pair_link(a, b)
            # Enough bytes for a few seconds at the declared rate, so TCP's ramp-up is a small part.
            total = int(min(mbps or 2000, 2000) * 1e6 / 8 * 2.0)
            measured = probe(state, a.name, b.name, config.port, total)
            rows.append(
                {
                    "from": a.name,
                    "to": b.name,
                    "declared_mbps": mbps,
                    "declared_one_way_ms": delay_ms,
                    **measured,
                }
            )
        share = float(run_inside(state, edge.name, [sys.executable, "-c", BURN]))
        return {
            "config": config.name,
            "links": rows,
            "edge_cpu_declared": edge.cpu,
            "edge_cpu_measured": share,
        }
    finally:
        lab.down(config.name, state_dir)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=["wifi-edge", "lan", "wan"])
    parser.add_argument("--json", type=Path, default=Path("out/lab_shaping.json"))
    args = parser.parse_args(argv)
    lab.lab.require(None)
    results = []
    with tempfile.TemporaryDirectory(prefix="partition-lab-") as tmp:
        for name in args.configs:
            result = measure(REPO / "cluster" / "lab" / f"{name}.toml", Path(tmp))
            results.append(result)
            print(
                f"\n{name}: edge CPU {result['edge_cpu_measured']:.3f} cores (declared {result['edge_cpu_declared']})"
            )
            print(f"  {'link':<22}{'declared':>20}{'measured':>24}")
            for row in result["links"]:
                declared = f"{row['declared_mbps'] or 'unshaped'} Mbit/s {row['declared_one_way_ms']:g} ms"
                measured = f"{row['mbps']:.1f} Mbit/s {row['one_way_ms']:.3f} ms"
                print(f"  {row['from'] + ' -> ' + row['to']:<22}{declared:>20}{measured:>24}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2))
    worst = max(
        abs(row["mbps"] / row["declared_mbps"] - 1)
        for r in results
        for row in r["links"]
        if row["declared_mbps"]
    )
    print(f"\nsummary: {len(results)} labs; shaped rates within {worst:.0%} of declared; JSON in {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
