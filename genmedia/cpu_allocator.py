"""On a CPU, a model service keeps the memory its forward passes free, for the next pass to reuse.

PyTorch allocates a CPU tensor with `malloc`. glibc serves big requests (over its mmap threshold: 128 KiB,
raised as big blocks are freed, to 32 MiB at most) with a fresh `mmap` and returns them with `munmap` on
free, and gives the top of its heap back to the system past its trim threshold. A forward pass allocates
and frees the same activations every time (a ViT-B attention map at 384 px: 16 MiB, layer after layer), so
every pass faults them back in, 4 KiB at a time, each page zeroed by the kernel: about 20 000 page faults a
BLIP-base caption, 750 000 a CPU image. With both thresholds raised once per process, freed memory stays
in the heap and the faults go (about 100 a caption); a pass reads the same data and computes the same
floats. The peak memory is what the largest pass needs either way; the process keeps it instead of
handing it back between passes, which a service that runs the next pass soon wants. Where the allocator
is not glibc's, nothing changes. On a GPU the activations live in CUDA's caching allocator already.
This holds for blocks over 64 MiB on a thread other than the main one only within the main arena, which
the services' workers keep to (`services.ONE_MALLOC_ARENA`, an environment variable glibc reads at start).

A hand-written `ctypes` call to `mallopt(3)`, because glibc reads the `MALLOC_*_` environment variables only
when a process starts, before a service's code can set them, and `bentoml serve` starts the workers.
"""

from __future__ import annotations

import ctypes

# mallopt(3)'s parameter numbers (glibc's malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# Requests up to 1 GiB come from the heap (bigger ones, rare on a CPU, are still mapped and unmapped).
MMAP_THRESHOLD_BYTES = 1 << 30
# The heap is never trimmed: the most a C int holds.
TRIM_THRESHOLD_BYTES = 2**31 - 1


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds in this process; whether the allocator took them."""
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)  # the C library this process already runs on
    if mallopt is None:
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
    )
