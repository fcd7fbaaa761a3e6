"""`genmedia.cpu_allocator`: memory a CPU forward pass frees stays in the process for the next one."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from services import ONE_MALLOC_ARENA
from testbed.serving import REPO_ROOT

# In a process of its own, as each model service is: the thresholds last for the process. A pass holds
# what four ViT-B attention maps at 384 px take (16 MiB each) and frees them; after thirty passes to settle,
# the minor page faults of ten more are counted.
# On a thread of its own (`thread`), as a service's passes run, a pass holds four maps of 80 MiB: over the
# 64 MiB a heap of a thread's own arena can hold.
PASSES_SCRIPT = """
import json, resource, sys, threading
import torch
from genmedia.cpu_allocator import keep_freed_memory

took = keep_freed_memory() if sys.argv[1] == "kept" else None
shape = (12, 577, 577) if sys.argv[2] == "main" else (20, 1024, 1024)
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
def forward():
    maps = [torch.ones(shape) for _ in range(4)]
    return sum(map_.sum() for map_ in maps)
def passes():
    for _ in range(30):
        forward()
    before = faults()
    for _ in range(10):
        forward()
    print(json.dumps({"took": took, "faults": faults() - before}))
if sys.argv[2] == "main":
    passes()
else:
    thread = threading.Thread(target=passes)
    thread.start()
    thread.join()
"""

PAGES_A_PASS = 4 * 12 * 577 * 577 * 4 // 4096


def passes(mode: str, where: str = "main", **env: str) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", PASSES_SCRIPT, mode, where],
        cwd=REPO_ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
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


def test_on_a_thread_of_its_own_passes_over_64_mib_keep_their_memory_in_the_one_arena_services_set():
    one_arena = {env["name"]: env["value"] for env in ONE_MALLOC_ARENA}
    kept, own_arena = passes("kept", "thread", **one_arena), passes("kept", "thread", MALLOC_ARENA_MAX="")
    assert kept["took"] is True
    # A thread's own arena maps each 80 MiB block afresh: every pass faults all of its pages in.
    assert own_arena["faults"] >= 10 * 4 * 20 * 1024 * 1024 * 4 // 4096 // 2, own_arena
    assert kept["faults"] * 4 <= own_arena["faults"], (kept, own_arena)
