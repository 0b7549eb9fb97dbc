"""Every Triton kernel passes Triton's front end for sm_90a at the specialisations it is launched with: what the
interpreter lets pass and a GPU compile refuses (a plain global read in a kernel, branches of different types)
fails here."""

import os
import subprocess
import sys
from pathlib import Path

from benchmarks import miras_resources

REPO = Path(__file__).resolve().parents[2]


def test_every_kernel_passes_tritons_front_end():
    """In a process of its own: the front end needs the compiled kernels, not the interpreted ones the tests use."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    command = [sys.executable, "-m", "benchmarks.front_end"]
    out = subprocess.run(command, env=env, capture_output=True, text=True, cwd=REPO, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    for name in miras_resources.KERNELS:
        assert f"front end passes: {name} at {', '.join(miras_resources.serves(name))}\n" in out.stdout
    for name in ("_hosa_fwd_kernel", "_hosa_bwd_query_kernel", "_hosa_bwd_key_kernel"):
        assert f"front end passes: {name} at ieee, tf32x3, tf32\n" in out.stdout
