"""`training.allocator.keep_freed_memory`: large blocks freed by one training step are reused by the next."""

import subprocess
import sys
import textwrap

import pytest

from training.allocator import runs_on_glibc

# Four 12 MiB blocks alive at once, then freed, five times: with glibc's defaults some go back to the OS after each
# round (mapped blocks, and the freed top of the heap beyond its trim threshold), so every round faults pages in again.
SCRIPT = textwrap.dedent(
    """
    import resource, torch
    from training.allocator import keep_freed_memory

    def rounds(count):
        for _ in range(count):
            blocks = [torch.ones(3 * 2**20) for _ in range(4)]
            del blocks

    def page_faults():
        rounds(2)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        rounds(5)
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

    default = page_faults()
    applied = keep_freed_memory()
    print(default, applied, keep_freed_memory(), page_faults())
    """
)


@pytest.mark.skipif(not runs_on_glibc(), reason="glibc only")
def test_keep_freed_memory_stops_the_page_faults_of_reallocated_blocks():
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True)
    default, applied, again, kept = result.stdout.split()
    assert applied == "True" and again == "True"
    pages = 4 * 12 * 2**20 // 4096
    assert int(default) >= pages  # the setting matters: with the defaults, the rounds fault in more than a round's pages
    assert int(kept) < pages // 10
