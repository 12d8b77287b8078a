"""Procedural label maps for shapes the atlases lack: blobs, tubes, sheets and cells.

Each generator returns an int32 label map of the requested (z, y, x) shape, 0 background
and objects labelled 1..K consecutively, using only the ``rng`` passed in.
"""

from __future__ import annotations

from collections.abc import Callable

import cc3d
import numpy as np
from scipy.interpolate import CubicSpline
from scipy.spatial import cKDTree

from .synth import random_rotation, smooth_field

__all__ = [
    "SHAPE_KINDS",
    "blobs",
    "cells",
    "random_shape_label_map",
    "sheets",
    "tubes",
]

Shape = tuple[int, int, int]


def _relabel(labels: np.ndarray, min_voxels: int = 1) -> np.ndarray:
    """Consecutive ids 1..K, dropping objects under ``min_voxels``."""
    counts = np.bincount(labels.ravel())
    keep = counts >= min_voxels
    keep[0] = False
    lut = np.zeros(counts.size, dtype=np.int32)
    lut[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
    return lut[labels]


def _paint_ellipsoid(
    lab: np.ndarray,
    value: int,
    centre: np.ndarray,
    radii: np.ndarray,
    rot: np.ndarray,
    noise: np.ndarray | None = None,
    amp: float = 0.0,
) -> None:
    """Paint an (optionally noise-deformed) rotated ellipsoid into background voxels only."""
    reach = float(radii.max()) * (1.0 + amp) + 1.0
    lo = np.maximum(np.floor(centre - reach).astype(int), 0)
    hi = np.minimum(np.ceil(centre + reach).astype(int) + 1, lab.shape)
    if np.any(hi <= lo):
        return
    sl = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    d = [
        (np.arange(lo[k], hi[k], dtype=np.float32) - np.float32(centre[k])).reshape(
            [-1 if j == k else 1 for j in range(3)]
        )
        for k in range(3)
    ]
    f = np.zeros(tuple(hi - lo), dtype=np.float32)
    for k in range(3):
        q = d[0] * np.float32(rot[0, k]) + d[1] * np.float32(rot[1, k]) + d[2] * rot[2, k]
        f += (q / np.float32(radii[k])) ** 2
    if noise is not None and amp > 0:
        f += np.float32(amp) * noise[sl]
    region = lab[sl]
    region[(f <= 1.0) & (region == 0)] = value


def blobs(shape: Shape, rng: np.random.Generator, n_blobs: int | None = None) -> np.ndarray:
    """Irregular blobs: deformed random ellipsoids, or thresholded smooth noise (cc3d split).

    ``n_blobs`` forces the ellipsoid variant with that many blobs (1–6 when None).
    """
    shape = tuple(int(s) for s in shape)
    if n_blobs is None and rng.random() < 0.4:
        field = smooth_field(shape, tuple(int(c) for c in rng.integers(4, 10, 3)), rng)
        thr = np.quantile(field.ravel()[:: max(1, field.size // 20000)], rng.uniform(0.85, 0.97))
        comps = cc3d.connected_components(field > thr, connectivity=6)
        lab = _relabel(comps.astype(np.int64, copy=False), min_voxels=20)
        if lab.max() > 0:
            return lab
    n = int(rng.integers(1, 7)) if n_blobs is None else int(n_blobs)
    lab = np.zeros(shape, dtype=np.int32)
    dims = np.asarray(shape, dtype=np.float64)
    noise = smooth_field(shape, tuple(int(c) for c in rng.integers(4, 9, 3)), rng)
    amp = float(rng.uniform(0.1, 0.6))
    for i in range(n):
        radii = np.maximum(rng.uniform(0.06, 0.25, 3) * dims.max(), 3.0)
        radii = np.minimum(radii, dims / 2.0)
        centre = rng.uniform(0.15, 0.85, 3) * (dims - 1)
        _paint_ellipsoid(lab, i + 1, centre, radii, random_rotation(rng), noise, amp)
    return _relabel(lab)


def _ball_offsets(radius: float) -> np.ndarray:
    r = int(np.ceil(radius))
    g = np.mgrid[-r : r + 1, -r : r + 1, -r : r + 1].reshape(3, -1).T
    return g[(g**2).sum(1) <= radius * radius + 0.25]


def _spline_curve(ctrl: np.ndarray, step: float = 0.5) -> np.ndarray:
    """Dense points (about ``step`` voxels apart) on a cubic spline through ``ctrl``."""
    seg = np.linalg.norm(np.diff(ctrl, axis=0), axis=1)
    t = np.concatenate([[0.0], np.cumsum(np.maximum(seg, 1e-3))])
    n = max(2, int(t[-1] / step) + 1)
    return CubicSpline(t, ctrl, axis=0, bc_type="natural")(np.linspace(0.0, t[-1], n))


def _walk(start: np.ndarray, n_pts: int, step: float, dims: np.ndarray, rng: np.random.Generator):
    """Control points of a smooth wandering path that stays inside the volume."""
    pts = [start]
    direction = rng.standard_normal(3)
    direction /= np.linalg.norm(direction)
    for _ in range(n_pts - 1):
        direction = direction + rng.normal(0.0, 0.6, 3)
        direction /= np.linalg.norm(direction)
        nxt = pts[-1] + direction * step
        # bounce off the walls so the vessel stays in view
        for k in range(3):
            if nxt[k] < 1 or nxt[k] > dims[k] - 2:
                direction[k] = -direction[k]
                nxt[k] = np.clip(pts[-1][k] + direction[k] * step, 1, dims[k] - 2)
        pts.append(nxt)
    return np.asarray(pts)


def tubes(
    shape: Shape,
    rng: np.random.Generator,
    n_tubes: int | None = None,
    branching: bool | None = None,
) -> np.ndarray:
    """Vessel-like trees: smooth random 3D curves (radius 1–5 voxels, tapering), branching.

    Each tree (trunk and its branches) is one label, 1..``n_tubes`` (1–4 when None).
    """
    shape = tuple(int(s) for s in shape)
    dims = np.asarray(shape, dtype=np.float64)
    n = int(rng.integers(1, 5)) if n_tubes is None else int(n_tubes)
    lab = np.zeros(shape, dtype=np.int32)
    flat = lab.ravel()
    strides = np.array([shape[1] * shape[2], shape[2], 1])
    for tree in range(1, n + 1):
        branch = rng.random() < 0.6 if branching is None else branching
        r0 = float(rng.uniform(1.0, 5.0))
        step = float(rng.uniform(0.15, 0.3) * dims.max())
        start = rng.uniform(0.1, 0.9, 3) * (dims - 1)
        if rng.random() < 0.5:
            # enter from a face, as vessels do
            ax = int(rng.integers(3))
            start[ax] = 1.0 if rng.random() < 0.5 else dims[ax] - 2
        ctrl = _walk(start, int(rng.integers(3, 7)), step, dims, rng)
        trunk = _spline_curve(ctrl)
        taper = float(rng.uniform(0.0, 0.5))
        segments = [(trunk, r0 * (1.0 - taper * np.linspace(0, 1, len(trunk))))]
        if branch:
            for _ in range(int(rng.integers(1, 5))):
                pts, radii = segments[int(rng.integers(len(segments)))]
                j = int(rng.integers(len(pts)))
                rb = float(radii[j]) * rng.uniform(0.5, 0.85)
                ctrl = _walk(pts[j], int(rng.integers(2, 5)), step * 0.7, dims, rng)
                child = _spline_curve(ctrl)
                segments.append((child, rb * (1.0 - 0.5 * np.linspace(0, 1, len(child)))))
        for pts, radii in segments:
            pts = np.clip(pts, 0, dims - 1)
            rq = np.maximum(np.round(radii * 2.0) / 2.0, 1.0)
            for r in np.unique(rq):
                centres = np.rint(pts[rq == r]).astype(np.int64)
                vox = (centres[:, None, :] + _ball_offsets(float(r))[None]).reshape(-1, 3)
                inside = np.all((vox >= 0) & (vox < shape), axis=1)
                idx = vox[inside] @ strides
                free = flat[idx] == 0
                flat[idx[free]] = tree
    return lab


def sheets(shape: Shape, rng: np.random.Generator, n_sheets: int | None = None) -> np.ndarray:
    """Thin curved surfaces 1–3 voxels thick: folded planes or shells, often finite patches.

    One label per sheet, 1..``n_sheets`` (1–3 when None).
    """
    shape = tuple(int(s) for s in shape)
    dims = np.asarray(shape, dtype=np.float32)
    n = int(rng.integers(1, 4)) if n_sheets is None else int(n_sheets)
    lab = np.zeros(shape, dtype=np.int32)
    g = [
        np.arange(s, dtype=np.float32).reshape([-1 if j == k else 1 for j in range(3)])
        for k, s in enumerate(shape)
    ]
    for i in range(1, n + 1):
        centre = rng.uniform(0.3, 0.7, 3).astype(np.float32) * (dims - 1)
        d = [g[k] - centre[k] for k in range(3)]
        thickness = float(rng.uniform(1.0, 3.0))
        amp = float(rng.uniform(0.0, 0.12) * dims.max())
        noise = smooth_field(shape, tuple(int(c) for c in rng.integers(2, 5, 3)), rng)
        if rng.random() < 0.6:
            normal = rng.standard_normal(3).astype(np.float32)
            normal /= np.linalg.norm(normal)
            f = d[0] * normal[0] + d[1] * normal[1] + d[2] * normal[2] + amp * noise
        else:
            radius = float(rng.uniform(0.2, 0.45) * dims.min())
            f = np.sqrt(d[0] ** 2 + d[1] ** 2 + d[2] ** 2) - radius + 0.5 * amp * noise
        # |f| / |grad f| is the distance to the surface, so folds keep the thickness
        gz, gy, gx = np.gradient(f)
        grad = np.sqrt(gz * gz + gy * gy + gx * gx)
        mask = np.abs(f) <= 0.5 * thickness * np.maximum(grad, 1e-3)
        if rng.random() < 0.5:
            # a finite patch rather than a surface spanning the whole view
            extent = float(rng.uniform(0.25, 0.5) * dims.max())
            mask &= d[0] ** 2 + d[1] ** 2 + d[2] ** 2 <= extent * extent
        region = mask & (lab == 0)
        lab[region] = i
    return _relabel(lab, min_voxels=20)


def cells(
    shape: Shape,
    rng: np.random.Generator,
    n_cells: int | None = None,
    dense: bool | None = None,
) -> np.ndarray:
    """Dozens of small cells, each its own label, like microscopy.

    ``dense=False``: nuclei, small deformed ellipsoids (radius 2–7) that may touch.
    ``dense=True``: packed tissue, a warped Voronoi tessellation inside a blob, with
    optional one-voxel gaps between cells. ``n_cells`` is the number drawn (None: 20–80
    tissue cells, or enough nuclei to fill 5–35 % of the view, 20–150); a few may end up
    hidden or outside the tissue.
    """
    shape = tuple(int(s) for s in shape)
    dims = np.asarray(shape, dtype=np.float64)
    dense = rng.random() < 0.4 if dense is None else dense
    if not dense:
        lab = np.zeros(shape, dtype=np.int32)
        noise = smooth_field(shape, tuple(int(c) for c in rng.integers(6, 12, 3)), rng)
        amp = float(rng.uniform(0.0, 0.3))
        r_mean = rng.uniform(2.5, 6.0)
        if n_cells is None:
            # as many nuclei as fill 5-35 % of the view (stardist-like crowding)
            fill = rng.uniform(0.05, 0.35) * float(np.prod(dims))
            n = int(np.clip(fill / (4.19 * r_mean**3), 20, 150))
        else:
            n = int(n_cells)
        for i in range(1, n + 1):
            radii = np.clip(r_mean * rng.uniform(0.7, 1.3, 3), 2.0, 7.0)
            centre = rng.uniform(0.0, 1.0, 3) * (dims - 1)
            _paint_ellipsoid(lab, i, centre, radii, random_rotation(rng), noise, amp)
        return _relabel(lab, min_voxels=4)
    n = int(rng.integers(20, 81)) if n_cells is None else int(n_cells)
    # packed tissue: Voronoi at half resolution (cheap), warped for wavy walls
    half = tuple(-(-s // 2) for s in shape)
    seeds = rng.uniform(0.0, 1.0, (n, 3)) * (np.asarray(half) - 1)
    warp = float(rng.uniform(0.0, 1.5))
    pts = np.stack(np.meshgrid(*[np.arange(s, dtype=np.float32) for s in half], indexing="ij"))
    if warp > 0:
        for k in range(3):
            pts[k] += np.float32(warp) * smooth_field(half, 5, rng)
    _, nearest = cKDTree(seeds).query(pts.reshape(3, -1).T, workers=1)
    low = nearest.reshape(half).astype(np.int32) + 1
    if rng.random() < 0.6:
        tissue = smooth_field(half, 3, rng) + 1.5 * (
            1.0 - 2.0 * np.sqrt(sum(((pts[k] / max(half[k] - 1, 1)) - 0.5) ** 2 for k in range(3)))
        )
        low[tissue < np.quantile(tissue, rng.uniform(0.2, 0.6))] = 0
    lab = low
    for ax in range(3):
        lab = np.repeat(lab, 2, axis=ax)
    lab = np.ascontiguousarray(lab[: shape[0], : shape[1], : shape[2]])
    if rng.random() < 0.5:
        # membranes as gaps: clear the voxels on one side of every interface
        for ax in range(3):
            a = np.moveaxis(lab, ax, 0)
            a[1:][(a[1:] != a[:-1]) & (a[:-1] > 0)] = 0
    return _relabel(lab, min_voxels=8)


SHAPE_KINDS: dict[str, Callable[[Shape, np.random.Generator], np.ndarray]] = {
    "blobs": blobs,
    "tubes": tubes,
    "sheets": sheets,
    "cells": cells,
}


def random_shape_label_map(shape: Shape, rng: np.random.Generator) -> np.ndarray:
    """Label map of one procedural kind chosen at random (see :data:`SHAPE_KINDS`)."""
    kinds = list(SHAPE_KINDS)
    return SHAPE_KINDS[kinds[int(rng.integers(len(kinds)))]](shape, rng)
