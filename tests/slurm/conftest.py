"""A session-wide local SLURM cluster (``tests/slurm/local_cluster.py``) of 2 emulated nodes."""

import importlib.util
import os
from pathlib import Path

import pytest


def _local_cluster_module():
    spec = importlib.util.spec_from_file_location("miras_local_cluster", Path(__file__).with_name("local_cluster.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def local_cluster():
    """A running 2-node cluster (2 CPUs per node, so that two 2-node jobs run side by side); ``SLURM_CONF``
    points at it for the whole session, so ``sbatch`` inside ``miras.slurm.submit`` submits to it."""
    lc = _local_cluster_module()
    cluster = lc.LocalCluster(nodes=2, cpus_per_node=2)
    try:
        cluster.__enter__()
    except lc.SlurmUnavailable as err:
        pytest.skip(f"no local SLURM: {err}")
    saved = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = cluster.env["SLURM_CONF"]
    try:
        yield cluster
    finally:
        if saved is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = saved
        cluster.__exit__(None, None, None)
