"""Letting go of a file map's pages once a tensor is copied out of it (madvise), for pytorch_model.bin.

torch.load(mmap=True) maps the whole file, and every tensor read through the map leaves its pages resident
beside the copy we keep: loading a gpt2-medium-shaped pytorch_model.bin peaks at 2.89 GiB without this and
1.77 GiB with it (`python -m benchmarks.formats`, BENCHMARKS.md). A reader can skip this file.
"""

import mmap
import sys

import torch


def _madvise():
    if sys.platform not in ("linux", "darwin"):
        return None
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        function = libc.madvise
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    return function


MADVISE = _madvise()
MADV_DONTNEED = 4  # the same number on Linux and macOS


def release_pages(tensor: torch.Tensor) -> None:
    """Drop the resident pages under a tensor's storage in a read-only file mapping. Nothing is lost: the
    mapping is private and never written, so a later access reads the pages from the file again."""
    if MADVISE is None:
        return
    storage = tensor.untyped_storage()
    begin = storage.data_ptr() // mmap.PAGESIZE * mmap.PAGESIZE
    end = storage.data_ptr() + storage.nbytes()
    if end > begin:
        MADVISE(begin, end - begin, MADV_DONTNEED)  # a failure only leaves the pages resident
