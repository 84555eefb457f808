"""Memory: glibc's malloc thresholds, fixed for the study's forward passes."""

import ctypes


def fix_malloc_thresholds() -> None:
    """Fix glibc's thresholds at 32 MB: a freed block under that size stays in the heap for the next
    batch to reuse; larger ones (the weights) are mapped and unmapped on their own.

    Measured at gpt2-medium shape, two runs each, alternating: left to itself, glibc raises its mmap
    threshold each time it frees a mapped block, so which sizes the heap holds drifts with the order of
    allocations (peak RSS 1.12x and 1.15x the file; study 20.7 and 23.2 s). With the threshold at 128 KB
    every batch's activations are new pages: 7.4-10.8 s of system time, study 24.8-30.0 s, peak 1.11x.
    Fixed at 32 MB: 1.4-2.4 s, study 19.8-22.1 s, peak 1.12x. The heap stays small because the forward
    passes keep nothing small between their large blocks (`collect.per_position_norms`). Elsewhere than
    glibc this does nothing.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 32 * 1024 * 1024)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 32 * 1024 * 1024)  # M_TRIM_THRESHOLD: free memory kept at the heap's top
    except (OSError, AttributeError):
        pass
