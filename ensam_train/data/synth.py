"""SynthSeg-style image synthesis from a label map (domain randomization).

A label map becomes an image with a random intensity per label, then blur, partial-volume
resolution loss, a multiplicative bias field, a random noise model, windowing to 0..255 and
a random gamma. Every random choice is drawn from the ``rng`` passed in, so a seed
reproduces a sample exactly.

The spatial deformation is a separate step (:func:`random_deform`): the image is painted
from the labels, so deforming the labels *before* painting deforms image and labels
together, with one nearest-neighbour warp instead of two.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage as ndi

from .intensity import gamma_lut

__all__ = [
    "NOISE_MODELS",
    "random_deform",
    "random_deform_pair",
    "random_rotation",
    "smooth_field",
    "synthesize",
    "synthesize_image",
]

NOISE_MODELS = ("none", "gaussian", "rician", "speckle", "poisson")
_NOISE_PROBS = (0.1, 0.35, 0.2, 0.15, 0.2)


# ---------------------------------------------------------------------------------------
# smooth random fields
# ---------------------------------------------------------------------------------------
def _interp_matrix(n_out: int, n_in: int) -> np.ndarray:
    """(n_out, n_in) weights that upsample n_in control values to n_out samples."""
    m = np.zeros((n_out, n_in), dtype=np.float32)
    if n_in == 1:
        m[:, 0] = 1.0
        return m
    u = np.linspace(0.0, n_in - 1, n_out) if n_out > 1 else np.zeros(1)
    i0 = np.minimum(np.floor(u).astype(np.int64), n_in - 2)
    f = u - i0
    # smoothstep instead of linear weights: no visible creases at the control points
    w = f * f * (3.0 - 2.0 * f)
    rows = np.arange(n_out)
    m[rows, i0] = 1.0 - w
    m[rows, i0 + 1] = w
    return m


def smooth_field(
    shape: tuple[int, ...], n_ctrl: int | tuple[int, int, int], rng: np.random.Generator
) -> np.ndarray:
    """Smooth random field (float32, about unit std) from a coarse grid of normal values.

    ``n_ctrl`` control points per axis set the wavelength (about ``shape / n_ctrl``).
    Upsampling is separable (three small matrix products), which is far cheaper than
    ``scipy.ndimage.zoom`` on a full volume.
    """
    shape = tuple(int(s) for s in shape)
    ctrl = (n_ctrl,) * 3 if isinstance(n_ctrl, (int, np.integer)) else tuple(n_ctrl)
    ctrl = tuple(max(1, min(int(c), s)) for c, s in zip(ctrl, shape, strict=True))
    coarse = rng.standard_normal(ctrl, dtype=np.float32)
    mz, my, mx = (_interp_matrix(s, c) for s, c in zip(shape, ctrl, strict=True))
    t = coarse @ mx.T  # (cz, cy, W)
    t = np.matmul(my, t)  # (cz, H, W)
    out = np.tensordot(mz, t, axes=(1, 0))  # (D, H, W)
    return np.ascontiguousarray(out, dtype=np.float32)


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """Uniformly random 3x3 rotation matrix."""
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


# ---------------------------------------------------------------------------------------
# spatial deformation
# ---------------------------------------------------------------------------------------
def _euler(angles: np.ndarray) -> np.ndarray:
    a, b, c = angles
    rx = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
    ry = np.array([[math.cos(b), 0, math.sin(b)], [0, 1, 0], [-math.sin(b), 0, math.cos(b)]])
    rz = np.array([[math.cos(c), -math.sin(c), 0], [math.sin(c), math.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _random_coords(
    shape: tuple[int, int, int],
    rng: np.random.Generator,
    max_rotation_deg: float,
    scale_range: tuple[float, float],
    elastic_prob: float,
    elastic_max: float,
) -> list[np.ndarray]:
    """Source coordinates (z, y, x) for every output voxel: affine about the centre + elastic."""
    angles = np.deg2rad(rng.uniform(-max_rotation_deg, max_rotation_deg, 3))
    scales = rng.uniform(scale_range[0], scale_range[1], 3)
    # output p samples the source at A (p - c) + c, so objects appear scaled by `scales`
    a = _euler(angles) @ np.diag(1.0 / scales)
    centre = (np.asarray(shape, dtype=np.float64) - 1.0) / 2.0
    elastic = rng.random() < elastic_prob
    if elastic:
        n_ctrl = tuple(int(c) for c in rng.integers(3, 6, 3))
        amp = rng.uniform(0.0, elastic_max) * max(shape)
    grids = [
        np.arange(s, dtype=np.float32) - np.float32(c) for s, c in zip(shape, centre, strict=True)
    ]
    z, y, x = grids[0][:, None, None], grids[1][None, :, None], grids[2][None, None, :]
    coords = []
    for i in range(3):
        c = (np.float32(a[i, 0]) * z + np.float32(a[i, 1]) * y) + np.float32(centre[i])
        c = c + np.float32(a[i, 2]) * x
        if elastic:
            c += np.float32(amp) * smooth_field(shape, n_ctrl, rng)
        coords.append(c)
    return coords


def _gather_nearest(volume: np.ndarray, coords: list[np.ndarray]) -> np.ndarray:
    d, h, w = volume.shape
    zi = np.clip(np.rint(coords[0]), 0, d - 1).astype(np.int64)
    flat = zi * (h * w)
    yi = np.clip(np.rint(coords[1]), 0, h - 1).astype(np.int64)
    flat += yi * w
    flat += np.clip(np.rint(coords[2]), 0, w - 1).astype(np.int64)
    return volume.ravel().take(flat)


def _gather_linear(volume: np.ndarray, coords: list[np.ndarray]) -> np.ndarray:
    shape = volume.shape
    lo, fr = [], []
    for c, n in zip(coords, shape, strict=True):
        c = np.clip(c, 0, n - 1)
        i0 = np.minimum(np.floor(c).astype(np.int64), max(n - 2, 0))
        lo.append(i0)
        fr.append((c - i0).astype(np.float32))
    strides = (shape[1] * shape[2], shape[2], 1)
    flat_vol = volume.ravel().astype(np.float32, copy=False)
    out = np.zeros(coords[0].shape, dtype=np.float32)
    for dz in (0, 1):
        wz = fr[0] if dz else 1.0 - fr[0]
        for dy in (0, 1):
            wzy = wz * (fr[1] if dy else 1.0 - fr[1])
            for dx in (0, 1):
                idx = [np.minimum(lo[k] + off, shape[k] - 1) for k, off in enumerate((dz, dy, dx))]
                flat = idx[0] * strides[0] + idx[1] * strides[1] + idx[2]
                out += wzy * (fr[2] if dx else 1.0 - fr[2]) * flat_vol.take(flat)
    return out


def random_deform(
    labels: np.ndarray,
    rng: np.random.Generator,
    max_rotation_deg: float = 15.0,
    scale_range: tuple[float, float] = (0.85, 1.15),
    elastic_prob: float = 0.8,
    elastic_max: float = 0.03,
) -> np.ndarray:
    """Random small affine (rotation, per-axis scale) + smooth elastic warp, nearest-neighbour.

    Same shape and dtype as ``labels``; out-of-volume samples take the nearest edge value.
    ``elastic_max`` is the largest displacement std as a fraction of the largest axis.
    Paint the image from the result (:func:`synthesize_image`) to deform both together.
    """
    coords = _random_coords(
        labels.shape, rng, max_rotation_deg, scale_range, elastic_prob, elastic_max
    )
    return _gather_nearest(labels, coords).reshape(labels.shape)


def random_deform_pair(
    image: np.ndarray,
    labels: np.ndarray,
    rng: np.random.Generator,
    max_rotation_deg: float = 15.0,
    scale_range: tuple[float, float] = (0.85, 1.15),
    elastic_prob: float = 0.8,
    elastic_max: float = 0.03,
) -> tuple[np.ndarray, np.ndarray]:
    """Warp an existing image (trilinear) and its labels (nearest) with one random field.

    Draws the same random numbers as :func:`random_deform`, so with equal seeds the labels
    match. The image keeps its dtype (rounded back for integer images).
    """
    if image.shape != labels.shape:
        raise ValueError(f"image {image.shape} and labels {labels.shape} differ in shape")
    coords = _random_coords(
        labels.shape, rng, max_rotation_deg, scale_range, elastic_prob, elastic_max
    )
    lab = _gather_nearest(labels, coords).reshape(labels.shape)
    img = _gather_linear(image, coords).reshape(image.shape)
    if np.issubdtype(image.dtype, np.integer):
        info = np.iinfo(image.dtype)
        img = np.clip(np.rint(img), info.min, info.max)
    return img.astype(image.dtype), lab


# ---------------------------------------------------------------------------------------
# image synthesis
# ---------------------------------------------------------------------------------------
def _label_boundaries(labels: np.ndarray) -> np.ndarray:
    """Voxels whose label differs from a face neighbour (both sides of each interface)."""
    b = np.zeros(labels.shape, dtype=bool)
    for ax in range(3):
        a = np.moveaxis(labels, ax, 0)
        bb = np.moveaxis(b, ax, 0)
        diff = a[1:] != a[:-1]
        bb[1:] |= diff
        bb[:-1] |= diff
    return b


def _thick_slices(img: np.ndarray, axis: int, factor: int) -> np.ndarray:
    """Average blocks of ``factor`` voxels along ``axis`` and interpolate back (partial volume)."""
    a = np.moveaxis(img, axis, 0)
    n = a.shape[0]
    m = -(-n // factor)
    pad = m * factor - n
    if pad:
        a = np.concatenate([a, np.repeat(a[-1:], pad, axis=0)], axis=0)
    low = a.reshape(m, factor, *a.shape[1:]).mean(axis=1)
    u = (np.arange(n, dtype=np.float32) + 0.5) / factor - 0.5
    i0 = np.clip(np.floor(u).astype(np.int64), 0, m - 1)
    i1 = np.minimum(i0 + 1, m - 1)
    w = np.clip(u - i0, 0.0, 1.0).astype(np.float32)[:, None, None]
    out = low[i0] * (1.0 - w) + low[i1] * w
    return np.ascontiguousarray(np.moveaxis(out, 0, axis))


def _add_noise(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    model = NOISE_MODELS[int(rng.choice(len(NOISE_MODELS), p=_NOISE_PROBS))]
    if model == "gaussian":
        sigma = np.float32(rng.uniform(0.005, 0.1))
        img += sigma * rng.standard_normal(img.shape, dtype=np.float32)
    elif model == "rician":
        # magnitude MR: noise on both quadrature channels, then the modulus
        sigma = np.float32(rng.uniform(0.01, 0.1))
        re = img + sigma * rng.standard_normal(img.shape, dtype=np.float32)
        im = sigma * rng.standard_normal(img.shape, dtype=np.float32)
        img = np.sqrt(re * re + im * im)
    elif model == "speckle":
        # ultrasound-like: multiplicative Rayleigh speckle, correlated over ~2 voxels
        strength = np.float32(rng.uniform(0.2, 0.8))
        half = tuple(-(-s // 2) for s in img.shape)
        m = rng.rayleigh(1.0, size=half).astype(np.float32)
        m *= np.float32(1.0 / math.sqrt(math.pi / 2.0))  # unit mean
        for ax in range(3):
            m = np.repeat(m, 2, axis=ax)
        m = m[: img.shape[0], : img.shape[1], : img.shape[2]]
        img *= 1.0 + strength * (m - 1.0)
    elif model == "poisson":
        # microscopy-like photon counting at a random peak count
        peak = rng.uniform(10.0, 200.0)
        np.maximum(img, 0.0, out=img)
        # the 99th percentile, not the max, so a few hot voxels cannot starve the rest
        top = float(np.percentile(img.ravel()[:: max(1, img.size // 20000)], 99.0))
        scale = peak / top if top > 0 else 1.0
        img = rng.poisson(img * scale).astype(np.float32) / np.float32(scale)
    return img


def synthesize_image(
    labels: np.ndarray,
    rng: np.random.Generator,
    *,
    blur_max: float = 1.2,
    thick_slice_prob: float = 0.4,
    bias_prob: float = 0.7,
    bias_max: float = 0.4,
) -> np.ndarray:
    """Random-contrast uint8 image (same shape as ``labels``) painted from a label map.

    Steps: Gaussian intensity per label (background included; sometimes all objects alike
    or bright boundaries, as in microscopy) → blur → thick slices along one axis (block
    average by 2–6 and back) → smooth multiplicative bias field → noise (none, Gaussian,
    Rician, speckle or Poisson) → window to 0..255 (min-max, percentiles, a clipped window,
    or with the background exactly 0) → random gamma.
    """
    if labels.ndim != 3:
        raise ValueError(f"labels must be 3D, got shape {labels.shape}")
    lab = labels if labels.dtype.kind in "iu" else labels.astype(np.int64)
    n_lab = int(lab.max()) + 1 if lab.size else 1
    shape = lab.shape

    # --- contrast: a Gaussian per label
    means = rng.uniform(0.0, 1.0, n_lab).astype(np.float32)
    stds = (rng.uniform(0.0, 0.06, n_lab) * rng.choice([0.3, 1.0, 2.0])).astype(np.float32)
    shared = n_lab > 2 and rng.random() < 0.25
    if shared:
        # all objects alike (stained nuclei, cells): only boundaries or gaps separate them
        means[1:] = np.clip(rng.uniform(0.0, 1.0) + rng.normal(0.0, 0.05, n_lab - 1), 0, 1)
    window_mode = int(rng.choice(4, p=(0.4, 0.25, 0.2, 0.15)))  # minmax, pct, window, bg0
    if window_mode == 3 or rng.random() < 0.15:
        # dark background (air in CT, outside a skull-stripped MR)
        means[0] = 0.0
        stds[0] = 0.0
    if n_lab > 1 and rng.random() < 0.9:
        # objects invisible against the background teach nothing but the box; keep a
        # minimum contrast most of the time (pushed to the side that has room)
        c = np.float32(rng.uniform(0.05, 0.25))
        delta = means[1:] - means[0]
        weak = np.abs(delta) < c
        up = np.where(delta >= 0, means[0] + c <= 1.0, means[0] - c < 0.0)
        means[1:][weak] = np.where(up, means[0] + c, means[0] - c)[weak]
    img = means[lab]
    img += stds[lab] * rng.standard_normal(shape, dtype=np.float32)
    if rng.random() < (0.5 if shared else 0.15):
        edge = np.float32(rng.uniform(0.2, 1.0) * rng.choice([-1.0, 1.0]))
        img[_label_boundaries(lab)] += edge

    # --- blur (point-spread function)
    if rng.random() < 0.8:
        sigmas = rng.uniform(0.0, blur_max, 3)
        for ax, s in enumerate(sigmas):
            if s >= 0.3:
                img = ndi.gaussian_filter1d(img, float(s), axis=ax, truncate=2.0)

    # --- resolution loss: thick slices along one axis
    if rng.random() < thick_slice_prob:
        axis = int(rng.choice(3, p=(0.5, 0.25, 0.25)))
        factor = int(rng.integers(2, 7))
        if shape[axis] >= 2 * factor:
            img = _thick_slices(img, axis, factor)

    # --- bias field
    if rng.random() < bias_prob:
        amp = np.float32(rng.uniform(0.0, bias_max))
        n_ctrl = tuple(int(c) for c in rng.integers(2, 5, 3))
        img *= np.exp(amp * smooth_field(shape, n_ctrl, rng))

    img = _add_noise(img, rng)

    # --- window to 0..255
    step = max(1, img.size // 20000)
    sub = img.ravel()[::step]
    if window_mode == 0:
        lo, hi = float(img.min()), float(img.max())
    elif window_mode == 1:
        lo, hi = np.percentile(sub, [rng.uniform(0.0, 2.0), rng.uniform(98.0, 100.0)])
    elif window_mode == 2:
        # CT-like window: a good part of the darkest voxels saturates to exactly 0
        lo, hi = np.percentile(sub, [rng.uniform(5.0, 40.0), rng.uniform(85.0, 100.0)])
    else:
        bg = sub[lab.ravel()[::step] == 0]
        lo = float(np.percentile(bg, rng.uniform(95.0, 100.0))) if bg.size else float(sub.min())
        hi = float(np.percentile(sub, rng.uniform(98.0, 100.0)))
    lo, hi = float(lo), float(hi)
    if not hi > lo:
        hi = lo + 1e-6
    img -= np.float32(lo)
    img *= np.float32(255.0 / (hi - lo))
    np.clip(img, 0.0, 255.0, out=img)
    out = np.rint(img).astype(np.uint8)

    # --- gamma, as a lookup table on the final bytes (0 stays 0)
    gamma = float(np.clip(np.exp(rng.normal(0.0, 0.3)), 0.5, 2.0))
    return gamma_lut(gamma)[out]


def synthesize(labels: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Deform the labels, then paint an image from them: ``(image uint8, labels)``."""
    deformed = random_deform(labels, rng)
    return synthesize_image(deformed, rng), deformed
