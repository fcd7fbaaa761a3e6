"""`genmedia.cpu_allocator`: memory a CPU forward pass frees stays in the process for the next one."""

from __future__ import annotations

import json
import subprocess
import sys

from testbed.serving import REPO_ROOT

# In a process of its own, as each model service is: the thresholds last for the process. A pass holds
# what four ViT-B attention maps at 384 px take (16 MiB each) and frees them; after thirty passes to settle,
# the minor page faults of ten more are counted.
PASSES_SCRIPT = """
import json, resource, sys
import torch
from genmedia.cpu_allocator import keep_freed_memory

took = keep_freed_memory() if sys.argv[1] == "kept" else None
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
def forward():
    maps = [torch.ones(12, 577, 577) for _ in range(4)]
    return sum(map_.sum() for map_ in maps)
for _ in range(30):
    forward()
before = faults()
for _ in range(10):
    forward()
print(json.dumps({"took": took, "faults": faults() - before}))
"""

PAGES_A_PASS = 4 * 12 * 577 * 577 * 4 // 4096


def passes(mode: str) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", PASSES_SCRIPT, mode], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.splitlines()[-1])


def test_without_it_passes_fault_their_memory_in_again():
    # glibc gives the top of its heap back past its trim threshold (twice its mmap threshold, 32 MiB at most);
    # how much of it comes back each pass varies, but ten passes fault in several passes' worth.
    assert passes("stock")["faults"] >= PAGES_A_PASS


def test_with_it_later_passes_fault_a_fraction_of_that():
    kept, stock = passes("kept"), passes("stock")
    assert kept["took"] is True
    # Not zero: a small allocation (a tensor's header) can land between two maps and pin a hole, and the
    # heap then grows by one map now and then.
    assert kept["faults"] * 4 <= stock["faults"], (kept, stock)
