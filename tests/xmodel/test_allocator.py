"""The fitting process's C allocator keeps freed buffers (`xmodel.allocator`)."""
import platform
import resource
import subprocess
import sys
import textwrap

import pytest

from xmodel import allocator

glibc = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                           reason="mallopt tuning is glibc's")

# malloc, touch and free a 48 MB block (above glibc's largest dynamic mmap threshold, 32 MiB) 30
# times: each round faults its pages in again unless the block is reused (numpy's own large arrays
# may be backed by huge pages, so the block comes from malloc itself)
ROUNDS = """
import ctypes, ctypes.util, resource
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
size = 48 << 20
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(30):
    block = libc.malloc(size)
    ctypes.memset(block, 1, size)
    libc.free(block)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(prelude: str, env: dict | None = None) -> int:
    code = textwrap.dedent(prelude) + ROUNDS
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    return int(out.stdout.split()[-1])


@glibc
def test_tuned_allocator_reuses_large_blocks():
    pages = (48 << 20) // resource.getpagesize()
    untuned = _faults("import os; os.environ['XMODEL_MALLOC_TUNING'] = '0'\n"
                      "from xmodel.allocator import tune_allocator; assert tune_allocator() == {}\n")
    tuned = _faults("from xmodel.allocator import tune_allocator\n"
                    "assert tune_allocator() == {'mmap_threshold': 64 << 20, 'trim_threshold': 256 << 20}\n")
    assert untuned > 20 * pages          # every round maps fresh pages
    assert tuned < 3 * pages             # the first round only


@glibc
def test_users_glibc_variables_win(monkeypatch):
    monkeypatch.setattr(allocator, "_applied", None)
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", str(1 << 20))
    monkeypatch.delenv("XMODEL_MALLOC_TUNING", raising=False)
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    assert allocator.tune_allocator() == {"trim_threshold": allocator.TRIM_THRESHOLD}
    assert allocator.tune_allocator() == {"trim_threshold": allocator.TRIM_THRESHOLD}   # once per process


def test_switched_off(monkeypatch):
    monkeypatch.setattr(allocator, "_applied", None)
    monkeypatch.setenv("XMODEL_MALLOC_TUNING", "0")
    assert allocator.tune_allocator() == {}
