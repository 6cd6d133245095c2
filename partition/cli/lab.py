"""Emulate unequal devices on this machine: `lab up --config cluster/lab/NAME.toml`, `lab down`.

Each device becomes a worker in its own network namespace with its bandwidth (tbf), one-way delay (a
delay proxy) and CPU quota (cgroup). `lab up` writes the cluster file that profile, plan and serve read;
`lab exec -- CMD` runs CMD inside the edge device; `lab down` removes everything it made, also after a
crash, but the processes' logs (kept in STATE_DIR/NAME/). Needs root.
"""

from __future__ import annotations

import argparse

from partition.cli.arguments import output_file, positive_number


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--state-dir", default=None, help="where lab state lives (default /run/partition-lab)"
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    up = actions.add_parser("up", help="bring a lab up and write its cluster file")
    up.add_argument("--config", required=True, help="lab config, e.g. cluster/lab/wifi-edge.toml")
    up.add_argument(
        "--out",
        type=output_file,
        default=None,
        help="cluster file to write (default: STATE_DIR/NAME/cluster.toml, which `lab down` removes)",
    )
    up.add_argument(
        "--ready-timeout",
        type=positive_number("seconds"),
        default=60.0,
        help="seconds to wait for the workers",
    )
    removes = (
        "remove a lab (default: every lab up): its processes, namespaces, links, cgroups, state and "
        "STATE_DIR/NAME/cluster.toml; its logs stay in STATE_DIR/NAME/ (the next `up` overwrites them) "
        "and so does a cluster file written with `up --out`"
    )
    down = actions.add_parser("down", help=removes, description=removes)
    down.add_argument("--name", default=None, help="the lab to remove")
    actions.add_parser("status", help="list the labs that are up")
    run = actions.add_parser("exec", help="run a command inside a device (default: the edge)")
    run.add_argument("--name", default=None, help="the lab (needed when several are up)")
    run.add_argument("--device", default=None, help="device name (default: the edge)")
    run.add_argument("--no-cpu-limit", action="store_true", help="run outside the device's CPU quota")
    run.add_argument("argv", nargs=argparse.REMAINDER, help="-- COMMAND ARGS...")


def run(args: argparse.Namespace) -> int:
    from partition import lab
    from partition.lab import processes
    from partition.lab.state import lab_command, list_states, state_dir

    if args.action == "up":
        state = lab.up(lab.load_lab_config(args.config), args.state_dir, args.out, args.ready_timeout)
        print(f"lab {state.name!r} is up (lab number {state.index}):")
        for name, info in state.devices.items():
            print(f"  {name:<12} {info['role']:<7} {info['address']:<20} namespace {info['netns']}")
        print(f"cluster file: {state.cluster_file}")
        directory = state_dir(args.state_dir)
        print(
            f"run commands on the edge: {lab_command(directory, 'exec -- partition serve ...')} ; "
            f"remove: {lab_command(directory, f'down --name {state.name}')}"
        )
        return 0
    if args.action == "down":
        names = lab.down(args.name, args.state_dir)
        print(f"removed: {', '.join(names)}" if names else "no lab was up")
        return 0
    if args.action == "status":
        states = list_states(state_dir(args.state_dir))
        if not states:
            print("no lab is up")
        for state in states:
            dead = [r for r in state.processes if not processes.is_running(r)]
            alive = len(state.processes) - len(dead)
            gone = "; not running: " + ", ".join(f"{r.kind} of {r.device} (log {r.log})" for r in dead)
            print(
                f"{state.name}: lab number {state.index}, {alive}/{len(state.processes)} processes running"
                + (gone if dead else "")
            )
            print(f"  cluster file: {state.cluster_file or '(not written: up did not finish)'}")
            for name, info in state.devices.items():
                print(f"  {name:<12} {info['role']:<7} {info['address']}")
        return 0
    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    return lab.exec_in(
        lab.find(args.name, args.state_dir), args.device, argv, cpu_limit=not args.no_cpu_limit
    )
