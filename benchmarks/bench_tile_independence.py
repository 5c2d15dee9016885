"""Tile independence of DiffIR: the engine and the plane methods against per-tile statistics, on held-out images.

The bundled ``diffir-denoise`` on Gaussian noise (sigma on the 0-255 scale) on Set12 and
scikit-image's ``camera``, normalised by the engine's percentile rule. For the engine
(``napari_diffir.restore``: one plane's statistics shared by the tiles, see the restorer's
``prepare_plane``; the JSON in results/ from before it landed holds the per-tile figures) and
for each plane method (``models.diffir.planewise``: statistics once per plane, then tiles),
it prints the PSNR of the untiled and the tiled runs, max |tiled - untiled| on the [0, 1] model scale, a seam figure and
the CPU seconds of the statistics and apply passes as a multiple of one plain untiled forward.
Tiles are laid and blended exactly as the engine does (``engine.tiling``), with the restorer's
overlap. The seam figure takes tiles of the first tile size cut with the first overlap as halo
and keeps only their cores (no blending): gradient energy across the tile borders over that of
the lines beside them, divided by the same figure of the untiled output (1.00 = no seam).

Methods: ``global`` (one prior and one map per attention layer for the plane, exact sums),
``global-p1``/``-p2`` (one or two full passes instead of the exact layer-by-layer sums),
``priorN`` (one prior per fixed N-pixel cell, blended; attention global), ``attnN`` (attention
maps per cell), ``gridN`` (both); a ``-hN`` suffix sets the halo of the statistics pass.

    python benchmarks/bench_tile_independence.py
    python benchmarks/bench_tile_independence.py --images camera,01 --methods global,grid64 --overlaps 32,64
    python benchmarks/bench_tile_independence.py --memory 1024      # peak RSS, each run in its own process
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

SET12 = "/work/data/testsets/Set12"
METHODS = ("global", "global-p1", "global-p2", "prior64", "prior64-p1", "grid64", "prior48", "prior128")


def method_options(spec: str) -> dict:
    """``prepare_plane`` keywords for a method name (see the module docstring)."""
    base, *suffixes = spec.split("-")
    kw: dict = {}
    if base.startswith("grid"):
        kw["prior_grid"] = kw["attention_grid"] = int(base[4:])
    elif base.startswith("prior"):
        kw["prior_grid"] = int(base[5:])
    elif base.startswith("attn"):
        kw["attention_grid"] = int(base[4:])
    elif base != "global":
        raise SystemExit(f"unknown method {spec!r}")
    for s in suffixes:
        key = {"p": "passes", "h": "halo"}[s[0]]
        kw[key] = int(s[1:])
    return kw


def load_image(name: str, set12: str) -> np.ndarray:
    if name == "camera":
        from skimage import data

        return data.camera().astype(np.float64) / 255
    from skimage import io

    return io.imread(os.path.join(set12, f"{name}.png")).astype(np.float64) / 255


def psnr(out: np.ndarray, clean: np.ndarray) -> float:
    return float(10 * np.log10(1.0 / np.mean((out.astype(np.float64) - clean) ** 2)))


def tiled(fn, x, tile: int, overlap: int, multiple: int):
    """``fn(tile, origin)`` over the engine's tiles of ``x`` (1, C, H, W), blended as it blends."""
    import torch

    from napari_diffir.engine.tiling import blend_weight, make_tiles

    _, _, h, w = x.shape
    tiles = make_tiles(h, w, tile, min(overlap, tile // 2), align=multiple)
    acc = torch.zeros_like(x, memory_format=torch.contiguous_format)
    wsum = torch.zeros(h, w)
    for t in tiles:
        out = fn(x[..., t.y0:t.y0 + t.h, t.x0:t.x0 + t.w], (t.y0, t.x0))
        wt = torch.from_numpy(blend_weight(t, h, w, min(overlap, tile // 2), 1)) if len(tiles) > 1 else 1.0
        acc[..., t.y0:t.y0 + t.h, t.x0:t.x0 + t.w] += out * wt
        wsum[t.y0:t.y0 + t.h, t.x0:t.x0 + t.w] += wt
    return acc / wsum, tiles


def stitched(fn, x, core: int, halo: int):
    """``fn(tile, origin)`` on tiles of ``core`` pixels plus ``halo``, keeping only each core:
    every output pixel comes from one tile, so nothing blends a seam away."""
    import torch

    from napari_diffir.models.diffir.plane_cells import walk

    h, w = x.shape[-2:]
    out = torch.zeros(x.shape)
    for win in walk(h, w, core, halo):
        ey0, ey1, ex0, ex1 = win.extent
        y0, y1, x0, x1 = win.core
        out[..., y0:y1, x0:x1] = fn(x[..., ey0:ey1, ex0:ex1], (ey0, ex0))[..., y0 - ey0:y1 - ey0, x0 - ex0:x1 - ex0]
    return out


def border_excess(image: np.ndarray, core: int) -> float:
    """Gradient energy across the tile borders (every ``core`` pixels) over that of the three line
    pairs on each side of them, averaged over borders and both axes (as the seam test does)."""
    ratios = []
    for axis in (0, 1):
        steps = (np.diff(image, axis=axis) ** 2).mean(axis=1 - axis)
        for b in range(core - 1, steps.size, core):
            ratios.append(steps[b] / np.r_[steps[b - 3:b], steps[b + 1:b + 4]].mean())
    return float(np.mean(ratios))


def cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def quality(args) -> dict:
    import torch

    import napari_diffir as nd
    from napari_diffir.engine.normalize import fit_normalizer
    from napari_diffir.models.diffir.planewise import prepare_plane, restore_tile_with
    from napari_diffir.restorer import TileContext

    torch.set_num_threads(args.threads)
    restorer = nd.get_restorer("diffir-denoise")
    model = restorer.model  # eval, frozen, channels-last: exactly what the engine runs
    m = model.multiple_of
    results = {"images": {}, "methods": list(args.methods), "tiles": args.tiles, "overlaps": args.overlaps}
    for name in args.images:
        clean = load_image(name, args.set12)
        rng = np.random.default_rng(args.seed)
        noisy = (clean + rng.normal(0, args.sigma / 255, clean.shape)).astype(np.float32)
        norm = fit_normalizer(noisy[None, None])
        x = torch.from_numpy(norm.forward(noisy[None]))[None].contiguous(memory_format=torch.channels_last)
        noise = TileContext(seed=0).noise_vector(model.ipr_dim).view(1, -1)  # the engine's, for seed=0

        def to_image(y, norm=norm):
            return norm.inverse(y[0].float().numpy())[0]

        with torch.inference_mode():
            model.restore(x, noise=noise)  # warm-up: the timed forward below is a steady-state one
            t0 = cpu()
            untiled = model.restore(x, noise=noise)
            forward_s = cpu() - t0
        row = {"size": list(clean.shape), "forward_cpu_s": forward_s, "untiled": psnr(to_image(untiled), clean)}
        engine = nd.restore(noisy, restorer, tile_size=max(clean.shape), seed=0)
        row["engine_untiled_vs_model"] = float(np.abs(norm.forward(engine[None])[0] - untiled[0, 0].numpy()).max())
        core, halo = args.tiles[0], args.overlaps[0]
        reference = border_excess(untiled[0, 0].numpy(), core)
        for tile in args.tiles:
            out = nd.restore(noisy, restorer, tile_size=tile, seed=0)
            row[f"engine_t{tile}"] = {
                "psnr": psnr(out, clean),
                "max_diff": float(np.abs(norm.forward(out[None])[0] - untiled[0, 0].numpy()).max()),
            }
        with torch.inference_mode():
            old = stitched(lambda t, o, noise=noise: model.restore(t, noise=noise), x, core, halo)
        row["per_tile_seam"] = border_excess(old[0, 0].numpy(), core) / reference
        for spec in args.methods:
            kw = method_options(spec)
            with torch.inference_mode():
                t0 = cpu()
                state = prepare_plane(model, x, noise=noise, **kw)
                t1 = cpu()
                whole = restore_tile_with(model, x, state)
                t2 = cpu()
                res = {"prepare_x": (t1 - t0) / forward_s, "apply_x": (t2 - t1) / forward_s,
                       "psnr": psnr(to_image(whole), clean),
                       "max_diff_vs_untiled_forward": float((whole - untiled).abs().max())}
                for tile in args.tiles:
                    for ov in args.overlaps:
                        y, _ = tiled(lambda t, o, s=state: restore_tile_with(model, t, s, o), x, tile, ov, m)
                        res[f"t{tile}_o{ov}"] = {"psnr": psnr(to_image(y), clean),
                                                 "max_diff": float((y - whole).abs().max())}
                new = stitched(lambda t, o, s=state: restore_tile_with(model, t, s, o), x, core, halo)
                res["seam"] = border_excess(new[0, 0].numpy(), core) / border_excess(whole[0, 0].numpy(), core)
            row[spec] = res
        results["images"][name] = row
        _print_image(name, row, args)
    _print_summary(results, args)
    return results


def _print_image(name: str, row: dict, args) -> None:
    print(f"\n## {name} {row['size'][0]}x{row['size'][1]}: untiled {row['untiled']:.3f} dB "
          f"(one forward {row['forward_cpu_s']:.1f} CPU s; engine untiled vs model {row['engine_untiled_vs_model']:.1e})")
    for tile in args.tiles:
        r = row[f"engine_t{tile}"]
        print(f"  engine tile {tile}: {r['psnr']:.3f} dB  max|d| {r['max_diff']:.4f}")
    print(f"  per-tile statistics seam figure: {row['per_tile_seam']:.3f}")
    for spec in args.methods:
        r = row[spec]
        cells = "  ".join(
            f"t{t}/o{o}: {r[f't{t}_o{o}']['psnr']:.3f} |d| {r[f't{t}_o{o}']['max_diff']:.4f}"
            for t in args.tiles for o in args.overlaps)
        print(f"  {spec:<12} untiled {r['psnr']:.3f} (vs plain forward {r['max_diff_vs_untiled_forward']:.1e})  "
              f"stats {r['prepare_x']:.2f}x  apply {r['apply_x']:.2f}x  seam {r['seam']:.3f} | {cells}")


def _print_summary(results: dict, args) -> None:
    rows = list(results["images"].values())
    n = len(rows)
    print(f"\n## Mean over {n} images (sigma {args.sigma}); ΔPSNR = tiled - untiled of the same method")
    print("| method | PSNR untiled | " + " | ".join(f"tile {t} ov {o}: mean ΔPSNR / worst ΔPSNR / max |d|"
                                                  for t in args.tiles for o in args.overlaps) + " | stats | apply |")
    print("|---|---|" + "---|" * (len(args.tiles) * len(args.overlaps)) + "---|---|")
    base = np.mean([r["untiled"] for r in rows])
    line = [f"| engine (nd.restore) | {base:.3f} |"]
    for t in args.tiles:
        d = [r[f"engine_t{t}"]["psnr"] - r["untiled"] for r in rows]
        md = max(r[f"engine_t{t}"]["max_diff"] for r in rows)
        for _ in args.overlaps:
            line.append(f" {np.mean(d):+.3f} / {min(d):+.3f} / {md:.3f} |")
    print("".join(line) + " 0 | 1.00x |")
    for spec in args.methods:
        line = [f"| {spec} | {np.mean([r[spec]['psnr'] for r in rows]):.3f} |"]
        for t in args.tiles:
            for o in args.overlaps:
                d = [r[spec][f"t{t}_o{o}"]["psnr"] - r[spec]["psnr"] for r in rows]
                md = max(r[spec][f"t{t}_o{o}"]["max_diff"] for r in rows)
                worst = max(d, key=abs)
                line.append(f" {np.mean(d):+.3f} / {worst:+.3f} / {md:.4f} |")
        stats = np.mean([r[spec]["prepare_x"] for r in rows])
        apply = np.mean([r[spec]["apply_x"] for r in rows])
        print("".join(line) + f" {stats:.2f}x | {apply:.2f}x |")
    print(f"\nThe engine row uses the restorer's own overlap ({nd_overlap()} px) whatever the columns say.")
    print("stats / apply: CPU time of prepare_plane / of restore_tile_with on the whole plane, in "
          f"plain untiled forwards. Seam figure (tile {args.tiles[0]}, halo {args.overlaps[0]}, 1.000 = "
          f"none), mean over images: per-tile statistics {np.mean([r['per_tile_seam'] for r in rows]):.3f}, " + ", ".join(
              f"{s} {np.mean([r[s]['seam'] for r in rows]):.3f}" for s in args.methods))


def nd_overlap() -> int:
    import napari_diffir as nd

    return nd.get_restorer("diffir-denoise").info.tile_overlap


def memory_child(mode: str, size: int, kw: dict, threads: int) -> dict:
    """Peak RSS of one run in this process: a plain forward, prepare_plane, or one tile."""
    import torch

    import napari_diffir as nd
    from napari_diffir.models.diffir.planewise import prepare_plane, restore_tile_with

    torch.set_num_threads(threads)
    model = nd.get_restorer("diffir-denoise").model
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.random((1, 1, size, size), dtype=np.float32)).contiguous(memory_format=torch.channels_last)
    noise = torch.randn(1, model.ipr_dim)
    with torch.inference_mode():
        state = prepare_plane(model, x[..., :64, :64], noise=noise)  # warm-up: kernels, lazy imports
        _reset_peak()
        before = _rss_mib()
        t0 = time.perf_counter()
        if mode == "forward":
            model.restore(x, noise=noise)
        elif mode == "prepare":
            state = prepare_plane(model, x, noise=noise, **kw)
        else:  # one engine-sized tile restored with the plane state
            state = prepare_plane(model, x[..., :size // 2, :size // 2], noise=noise, passes=0)
            _reset_peak()
            before = _rss_mib()
            restore_tile_with(model, x[..., :int(mode), :int(mode)], state)
        seconds = time.perf_counter() - t0
    return {"mode": mode, "size": size, "peak_mib": _peak_mib(), "before_mib": before, "seconds": seconds}


def _reset_peak() -> None:
    import gc

    gc.collect()
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")


def _status_mib(field: str) -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field):
                return int(line.split()[1]) / 1024
    raise RuntimeError(field)


def _rss_mib() -> float:
    return _status_mib("VmRSS:")


def _peak_mib() -> float:
    return _status_mib("VmHWM:")


def memory(args) -> None:
    size = args.memory
    runs = [("forward", {}), ("prepare", {}), ("prepare", {"passes": 1}), ("prepare", {"prior_grid": 64})]
    runs += [(str(t), {}) for t in args.tiles]
    print(f"## Peak RSS, {size}x{size} plane, each run in a fresh process ({args.threads} thread)")
    print("| run | peak RSS MiB | growth over the loaded model MiB | wall s |")
    print("|---|---|---|---|")
    for mode, kw in runs:
        cmd = [sys.executable, __file__, "--memory-child", json.dumps([mode, size, kw, args.threads])]
        env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
        out = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout.splitlines()[-1])
        label = {"forward": "plain untiled forward"}.get(mode, f"one {mode}x{mode} tile, restore_tile_with")
        if mode == "prepare":
            label = f"prepare_plane {kw or 'global exact'} (cell 256)"
        print(f"| {label} | {out['peak_mib']:.0f} | {out['peak_mib'] - out['before_mib']:.0f} | {out['seconds']:.1f} |")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", default="camera," + ",".join(f"{i:02d}" for i in range(1, 13)),
                   help="comma-separated: camera and/or Set12 numbers (01..12)")
    p.add_argument("--set12", default=SET12, help="folder with Set12's 01.png .. 12.png (evaluation only)")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--tiles", default="128,256")
    p.add_argument("--overlaps", default="32", help="tile overlaps for the plane methods (engine default: 32)")
    p.add_argument("--sigma", type=float, default=25.0)
    p.add_argument("--seed", type=int, default=0, help="noise seed (numpy)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", help="write all figures to this file")
    p.add_argument("--memory", type=int, metavar="SIZE", help="measure peak RSS on a SIZE x SIZE plane instead")
    p.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.memory_child:
        mode, size, kw, threads = json.loads(args.memory_child)
        print(json.dumps(memory_child(mode, size, kw, threads)))
        return
    args.images = args.images.split(",")
    args.methods = [s for s in args.methods.split(",") if s]
    args.tiles = [int(t) for t in args.tiles.split(",")]
    args.overlaps = [int(o) for o in args.overlaps.split(",")]
    if args.memory:
        memory(args)
        return
    results = quality(args)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=1)


if __name__ == "__main__":
    main()
