"""Keep freed host memory in the process, so that XLA's per-step scratch block is reused.

XLA's CPU runtime mallocs each execution's scratch ("temp") buffer and frees it afterwards;
the default MLM train step needs ~250 MiB of it. glibc serves a block that large with a fresh
`mmap` and gives it back with `munmap`, so on every step the kernel maps and zeroes tens of
thousands of new pages: page faults and system time that are a sizeable part of a CPU step
(measured in docs/results/mlm_throughput.md).

Three malloc settings make glibc keep the block and hand the same memory out again on the next
step (zero page faults once warm):
  - M_MMAP_MAX = 0: serve large blocks from the heap instead of separate mappings;
  - M_TRIM_THRESHOLD high: never give the top of the heap back to the kernel;
  - M_ARENA_MAX = 1: XLA allocates from its worker threads, and a thread's own arena cannot
    hold a block over 64 MiB (it falls back to mmap whatever M_MMAP_MAX says).
The arena setting only affects threads that have not allocated yet, so the entry points call
`keep_freed_host_memory` before JAX starts its runtime. Cost: the heap keeps its high-water mark
(the resident size does not shrink after, say, a long-sequence evaluation).

Elsewhere than glibc (macOS, musl) this is a no-op. ATTENTION_LAB_KEEP_FREED_MEMORY=0 turns it
off, e.g. to measure the difference.
"""
from __future__ import annotations

import ctypes
import os
import sys

_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8  # glibc's <malloc.h>
_applied = None


def keep_freed_host_memory() -> bool:
  """Applies the settings above once per process; True where they are in effect."""
  global _applied
  if _applied is None:
    _applied = _apply()
  return _applied


def _apply() -> bool:
  if os.environ.get("ATTENTION_LAB_KEEP_FREED_MEMORY", "1") == "0" or not sys.platform.startswith(
      "linux"):
    return False
  try:
    libc = ctypes.CDLL(None)
    libc.gnu_get_libc_version  # glibc only: other C libraries' mallopt differs or is absent
    mallopt = libc.mallopt
  except (OSError, AttributeError):
    return False
  mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
  settings = ((_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, 2**31 - 1), (_M_ARENA_MAX, 1))
  return all(mallopt(param, value) == 1 for param, value in settings)
