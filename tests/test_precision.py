"""``precision="auto"``: bf16 where the device computes it natively and the restorer allows it.

The CPU capability probe is replaced by a fixed answer, so these tests say the same on every
machine; the probe itself is checked against the Linux CPU flags it falls back to.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_diffir import Restorer, RestorerInfo
from napari_diffir.engine import device as device_mod
from napari_diffir.engine.device import native_bf16_cpu, resolve_precision
from napari_diffir.engine.plan import plan
from napari_diffir.engine.run import run
from napari_diffir.engine.settings import RestoreSettings

CPU = torch.device("cpu")


class AutocastProbe(Restorer):
    """Returns its input and records the autocast dtype each tile ran under."""

    info = RestorerInfo(name="test-autocast", display_name="autocast probe", task="denoise", in_channels=1)

    def __init__(self, supports_half: bool = True) -> None:
        super().__init__()
        self.info = self.info.replace(supports_half=supports_half)
        self.seen: list[torch.dtype | None] = []

    def restore_tile(self, x, ctx):
        self.seen.append(torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None)
        return x.clone()


@pytest.fixture
def bf16_cpu(monkeypatch):
    def set_native(value: bool) -> None:
        monkeypatch.setattr(device_mod, "native_bf16_cpu", lambda: value)
    return set_native


@pytest.mark.parametrize(("native", "expected"), [(True, "bf16"), (False, "fp32")])
def test_auto_picks_bf16_only_on_a_cpu_with_native_bf16(bf16_cpu, native, expected):
    bf16_cpu(native)
    assert resolve_precision("auto", CPU) == expected
    assert resolve_precision("auto", CPU, supports_half=False) == "fp32"


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_explicit_precisions_are_kept(bf16_cpu, precision):
    bf16_cpu(False)
    assert resolve_precision(precision, CPU) == precision


@pytest.mark.parametrize(("bf16", "expected"), [(True, "bf16"), (False, "fp32")])
def test_auto_on_cuda_needs_native_bf16(monkeypatch, bf16, expected):
    asked = []
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: asked.append(including_emulation) or bf16)
    assert resolve_precision("auto", torch.device("cuda")) == expected
    assert asked == [False]  # emulated bf16 is slower than fp32
    assert resolve_precision("auto", torch.device("mps")) == "fp32"


@pytest.mark.parametrize(("native", "dtype", "recorded"), [(True, torch.bfloat16, "bf16"), (False, None, "fp32")])
def test_a_run_with_auto_uses_and_records_the_resolved_precision(bf16_cpu, native, dtype, recorded):
    bf16_cpu(native)
    probe = AutocastProbe()
    x = np.random.default_rng(0).random((40, 48), dtype=np.float32)
    result = run(plan(x, probe, RestoreSettings(precision="auto", device="cpu", normalize="none", tile_size=None)))
    assert probe.seen == [dtype]
    assert result.provenance()["precision"] == recorded
    np.testing.assert_array_equal(result.data, x)


class PlaneAutocastProbe(AutocastProbe):
    """Also records the autocast dtype its whole-plane statistics were computed under."""

    def prepare_plane(self, x, ctx):
        self.seen.append(("plane", torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None))
        return "state"


@pytest.mark.parametrize(("native", "dtype"), [(True, torch.bfloat16), (False, None)])
def test_plane_statistics_run_in_the_tiles_resolved_precision(bf16_cpu, native, dtype):
    """A tiled run with ``auto`` computes the plane's statistics in the precision its tiles use."""
    bf16_cpu(native)
    probe = PlaneAutocastProbe()
    x = np.random.default_rng(0).random((64, 64), dtype=np.float32)
    run(plan(x, probe, RestoreSettings(precision="auto", device="cpu", normalize="none", tile_size=32, tile_overlap=8)))
    assert probe.seen[0] == ("plane", dtype) and len(probe.seen) > 2 and set(probe.seen[1:]) == {dtype}


def test_auto_keeps_fp32_for_a_restorer_without_half_precision(bf16_cpu):
    bf16_cpu(True)
    probe = AutocastProbe(supports_half=False)
    x = np.zeros((40, 48), np.float32)
    result = run(plan(x, probe, RestoreSettings(precision="auto", device="cpu", normalize="none", tile_size=None)))
    assert probe.seen == [None] and result.provenance()["precision"] == "fp32"
    with pytest.raises(ValueError, match="does not support precision 'bf16'"):
        plan(x, probe, RestoreSettings(precision="bf16", device="cpu"))


@pytest.mark.parametrize(("flags", "expected"), [
    ({"avx512f", "avx512_bf16"}, True), ({"amx_bf16", "amx_tile"}, True), ({"avx2", "avx512f"}, False), (set(), False),
])
def test_the_probe_falls_back_to_the_cpu_flags(monkeypatch, flags, expected):
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported", raising=False)
    monkeypatch.setattr(device_mod, "_cpu_flags", lambda: flags)
    assert native_bf16_cpu.__wrapped__() is expected


def test_the_probe_agrees_with_the_linux_cpu_flags():
    flags = device_mod._cpu_flags()
    if not flags:
        pytest.skip("no /proc/cpuinfo flags on this system")
    assert native_bf16_cpu() is bool(flags & {"avx512_bf16", "amx_bf16"})
