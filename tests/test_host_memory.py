"""utils/host_memory.py: XLA's per-call scratch block is reused instead of re-faulted each call.

Each check runs in a fresh interpreter: the malloc settings only hold for threads that have
not allocated yet, so they must be made before JAX starts (as the entry points do).
"""
import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

# One jitted call whose 4096 x 4096 f32 intermediate (64 MiB, 16384 pages of 4 KiB) is a
# scratch buffer: the second product consumes it inside the same executable.
_PROBE = """
import json, sys
sys.path.insert(0, {root!r})
from utils.host_memory import keep_freed_host_memory
kept = keep_freed_host_memory()
import jax, jax.numpy as jnp
a, b, c = jnp.ones((4096, 64)), jnp.ones((64, 4096)), jnp.ones((4096, 8))
f = jax.jit(lambda a, b, c: jnp.tanh(a @ b) @ c).lower(a, b, c).compile()
temp = f.memory_analysis().temp_size_in_bytes
for _ in range(10):
  f(a, b, c).block_until_ready()
from benchmarks.common import page_faults_per_call  # what the throughput page reports
faults = page_faults_per_call(lambda: f(a, b, c), calls=11)
print(json.dumps({{"kept": kept, "faults": faults, "temp": temp}}))
"""
_PAGES = 4096 * 4096 * 4 // 4096


def _probe(keep: bool) -> dict:
  env = dict(os.environ, JAX_PLATFORMS="cpu", ATTENTION_LAB_KEEP_FREED_MEMORY="1" if keep else "0")
  out = subprocess.run([sys.executable, "-c", _PROBE.format(root=ROOT)], env=env, cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-2000:]
  return json.loads(out.stdout.strip().splitlines()[-1])


def test_scratch_block_is_reused_not_refaulted():
  kept, off = _probe(keep=True), _probe(keep=False)
  assert off["kept"] is False
  if not kept["kept"]:
    pytest.skip("not glibc on Linux: the settings do not apply")
  assert kept["temp"] >= 4096 * 4096 * 4, kept  # the probe does need its 64 MiB scratch block
  # warm: the block comes from the retained heap; re-faulting it would cost ~16k faults a call.
  # (The median call: on a loaded machine the heap sometimes grows by one more block, likely
  # when a call allocates its scratch before the previous call's is freed: once, not a call.)
  assert kept["faults"] < _PAGES / 8, (kept, off)
  # the switch restores glibc's default (the block a fresh mapping each call), unless
  # transparent huge pages are 'always' on, which makes it ~32 faults of 2 MiB instead
  thp = "/sys/kernel/mm/transparent_hugepage/enabled"
  if os.path.exists(thp) and "[always]" not in open(thp).read():
    assert off["faults"] > _PAGES / 2, (kept, off)
