"""A real dask.distributed LocalCluster (2 worker processes, CPU) restoring a Zarr volume.

Checks that the distributed result equals the single-process and the in-memory ones, that the
work is spread over both workers, that each worker loads the model once, and that no worker ever
held the whole array: every tile a task restored and every result a worker kept in memory is
measured on the workers themselves (the engine's block statistics and a worker plugin).
"""

from __future__ import annotations

import sys

import cloudpickle
import dask.array as da
import numpy as np
import pytest
import torch
import zarr

from napari_diffir import list_restorers, restore
from napari_diffir.batch import restore_file
from napari_diffir.engine import lazy

distributed = pytest.importorskip("distributed")

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers need not import tests/

SHAPE, CHUNKS = (2, 96, 96), (1, 48, 48)
N_BLOCKS = 2 * 2 * 2  # output chunks
TILE = 48  # tiles at 0, 40 and 48 along Y and X with an 8-pixel overlap: 9 per plane
N_TILES = 2 * 3 * 3


class HeldBytes(distributed.WorkerPlugin):
    """Largest single result a worker ever held in memory, in bytes."""

    name = "napari-diffir-held-bytes"

    def setup(self, worker):
        self.worker = worker
        self.largest = 0

    def transition(self, key, start, finish, **kwargs):
        if finish == "memory" and key in self.worker.data:
            from dask.sizeof import sizeof

            self.largest = max(self.largest, int(sizeof(self.worker.data[key])))


def _largest_held(dask_worker):
    return dask_worker.plugins[HeldBytes.name].largest


def _reset(dask_worker):
    from napari_diffir.engine import lazy

    lazy.reset_block_stats()
    dask_worker.plugins[HeldBytes.name].largest = 0


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as c:
        c.register_plugin(HeldBytes())
        yield c


@pytest.fixture(scope="module")
def volume(tmp_path_factory):
    img = np.random.default_rng(0).integers(100, 4000, SHAPE).astype(np.uint16)
    path = str(tmp_path_factory.mktemp("vol") / "vol.zarr")
    z = zarr.create_array(path, shape=SHAPE, chunks=CHUNKS, dtype=img.dtype)
    z[:] = img
    return path, img


def _tiny_checkpoints(folder):
    """Random-weight DiffIR (deblur) and SRDiff x4 checkpoints, saved where workers can read them."""
    from .test_restorer_diffir import tiny
    from .test_restorer_srdiff import _save, _tiny_model

    diffir = str(folder / "diffir.pth")
    sd = tiny(task="deblur").state_dict()
    torch.save({"params": sd, "params_ema": sd}, diffir)
    return {"diffir": diffir, "srdiff": _save(_tiny_model(), folder / "srdiff.safetensors")}


def _models():
    small = {"tile_overlap": 8, "tile_size": TILE}  # small tiles keep the tasks (and the test) small
    cases = [("lanczos", None, {"tile_size": TILE}), ("diffir", "tiny", small), ("srdiff", "tiny", {"steps": 2, **small})]
    bundled = [i.name for i in list_restorers() if i.weights and i.source == "napari-diffir (built-in)"]
    cases += [(name, None, small) for name in bundled[:1]]  # a bundled model once one ships
    return cases


@pytest.mark.slow
@pytest.mark.parametrize("name, weights, kwargs", _models())
def test_cluster_result_equals_one_process_and_no_worker_holds_the_array(
    client, volume, tmp_path, name, weights, kwargs
):
    """Distributed == synchronous == in memory, both workers work, one model load each, tasks
    hold one tile each."""
    path, img = volume
    if weights == "tiny":
        weights = _tiny_checkpoints(tmp_path)[name]
    x = da.from_zarr(path)
    graph = restore(x, name, weights=weights, axes="ZYX", seed=5, **kwargs)
    client.run(_reset)

    got = _gather_blockwise(client, graph)
    expected = graph.compute(scheduler="sync")
    np.testing.assert_allclose(got, expected, rtol=0, atol=4000 * 1e-5)
    in_memory = restore(img, name, weights=weights, axes="ZYX", seed=5, **kwargs)
    np.testing.assert_allclose(got, in_memory, rtol=0, atol=4000 * 1e-4)  # 1e-4 of the range

    stats = client.run(lazy.block_stats)
    per_block = TILE * TILE
    assert sum(s["blocks"] for s in stats.values()) == N_TILES
    assert all(s["blocks"] > 0 for s in stats.values()), stats  # both workers restored blocks
    assert all(s["models_loaded"] <= 1 for s in stats.values()), stats  # once per process
    assert all(0 < s["max_block_elements"] <= per_block < img.size for s in stats.values()), stats
    held = client.run(_largest_held)
    assert all(0 < b < got.nbytes / 4 for b in held.values()), (held, got.nbytes)


def _gather_blockwise(client, graph) -> np.ndarray:
    """Compute every output block as its own future and assemble them here, on the client.

    (``client.compute(graph)`` would concatenate the whole result on one worker first.)
    """
    blocks = graph.to_delayed()
    futures = client.compute(blocks.ravel().tolist())
    parts = np.empty(blocks.shape, dtype=object)
    for index, part in zip(np.ndindex(blocks.shape), client.gather(futures)):
        parts[index] = part
    return np.block(parts.tolist())


@pytest.mark.slow
def test_streaming_to_ome_zarr_through_a_scheduler_address(client, volume, tmp_path):
    """`--scheduler tcp://...`: the file is restored by the cluster's workers, chunk by chunk."""
    path, img = volume
    client.run(_reset)
    out = str(tmp_path / "out.ome.zarr")
    result = restore_file(path, out, "lanczos", chunk=48, scheduler=client.scheduler.address, progress=False,
                          tile_size=TILE, tile_overlap=8)
    assert result.chunks_computed == N_BLOCKS
    got = zarr.open_array(out + "/0", mode="r")[:]
    np.testing.assert_allclose(got, restore(img, "lanczos", axes="ZYX", tile_size=TILE, tile_overlap=8), atol=1e-2)
    stats = client.run(lazy.block_stats)
    assert sum(s["blocks"] for s in stats.values()) == N_TILES and all(s["blocks"] for s in stats.values())
    held = client.run(_largest_held)
    assert all(b < got.nbytes / 4 for b in held.values())


@pytest.mark.slow
def test_an_active_client_is_used_when_no_scheduler_is_named(client, volume, tmp_path):
    """restore_file without --scheduler runs on the Client the caller already made."""
    path, _ = volume
    client.run(_reset)
    with client.as_current():
        restore_file(path, str(tmp_path / "o.ome.zarr"), "lanczos", chunk=48, progress=False,
                     tile_size=TILE, tile_overlap=8)
    stats = client.run(lazy.block_stats)
    assert sum(s["blocks"] for s in stats.values()) == N_TILES
