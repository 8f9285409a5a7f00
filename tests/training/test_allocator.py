"""`training.allocator.keep_freed_memory`: large blocks freed by one training step are reused by the next."""

import subprocess
import sys
import textwrap

import pytest

from training.allocator import runs_on_glibc

BLOCK = 12 * 2**20  # one upscaled 64x64 activation of the learning benchmark's model
ROUND_PAGES = 4 * BLOCK // 4096

# Four 12 MiB blocks written and freed, two rounds to settle, then five measured rounds. The blocks come straight from
# libc's malloc (not torch, whose small allocations between them can pin the heap's top by chance and let one round
# grow the heap). With glibc's defaults the first freed block raises the mmap threshold to 12 MiB and the trim
# threshold to 24 MiB, so every round's 48 MiB is trimmed and faulted in again.
SCRIPT = textwrap.dedent(
    f"""
    import ctypes, resource, sys
    from training.allocator import keep_freed_memory

    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, (ctypes.c_size_t,)
    libc.free.argtypes = (ctypes.c_void_p,)

    def rounds(count):
        for _ in range(count):
            blocks = [libc.malloc({BLOCK}) for _ in range(4)]
            for block in blocks:
                ctypes.memset(block, 1, {BLOCK})
            for block in blocks:
                libc.free(block)

    applied = keep_freed_memory() and keep_freed_memory() if sys.argv[1] == "kept" else None
    rounds(2)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    rounds(5)
    print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    """
)


def page_faults(arm: str) -> tuple[str, int]:
    result = subprocess.run([sys.executable, "-c", SCRIPT, arm], capture_output=True, text=True, check=True)
    applied, faults = result.stdout.split()
    return applied, int(faults)


@pytest.mark.skipif(not runs_on_glibc(), reason="glibc only")
def test_keep_freed_memory_stops_the_page_faults_of_reallocated_blocks():
    _, default = page_faults("default")
    applied, kept = page_faults("kept")
    assert applied == "True"  # applied, and a second call reports it applied
    assert default >= 4 * ROUND_PAGES  # the setting matters: with the defaults, the rounds fault their pages in again
    assert kept < ROUND_PAGES // 10
