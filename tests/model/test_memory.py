"""Loading a segment reads only its tensors: 5 blocks of SmolLM2 peak well below the whole model."""

import json
import subprocess
import sys

# Peak resident memory (VmHWM) above what the process held before opening the model file
# (python + torch + our package), in a fresh process per measurement.
LOAD = """
import json, sys, torch
from partition.model import resolve_model, load_segment
from partition.types import Segment

def vm(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1])

base = vm("VmRSS")
source = resolve_model("smollm2-135m")
model = load_segment(source, Segment(int(sys.argv[1]), int(sys.argv[2])))
print(json.dumps({"peak_kb": vm("VmHWM") - base, "weights": model.weight_bytes()}))
"""


def _peak_kb(start: int, end: int) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", LOAD, str(start), str(end)], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_five_blocks_peak_under_40_percent_of_whole_model():
    whole = _peak_kb(0, 32)
    five = _peak_kb(10, 15)
    assert whole["weights"] > 500e6  # fp32 SmolLM2: the comparison is against real weights
    assert five["peak_kb"] < 0.40 * whole["peak_kb"], (five, whole)
