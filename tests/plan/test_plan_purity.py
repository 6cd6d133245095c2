import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_plan_package_imports_neither_torch_nor_grpc():
    code = (
        "import sys, partition.plan, partition.plan.solver, partition.plan.report, partition.cli.plan\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'grpc'))\n"
        "print(','.join(heavy))"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""
