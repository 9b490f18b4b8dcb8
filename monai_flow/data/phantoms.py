"""Synthetic anatomical phantoms for demos, tests and benchmarks (noise-free ground truth).

``ct_phantom`` gives an axial chest-like section in HU: an elliptic body with fat rim, two lungs
with vessels, a heart, a vertebra with cortical bone and texture. ``mr_phantom`` gives a
brain-like magnitude image: skull/scalp ring, CSF, grey and white matter and ventricles, in air.
Both are deterministic under a ``torch.Generator`` and vary in shape between draws.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = ["ct_phantom", "mr_phantom"]


def _grid(shape: Sequence[int], device=None) -> tuple[torch.Tensor, ...]:
    """Coordinates in [-1, 1] for each axis of ``shape`` (2D or 3D)."""
    axes = [torch.linspace(-1.0, 1.0, n, device=device) for n in shape]
    return torch.meshgrid(*axes, indexing="ij")


def _ellipse(coords, centre, radii) -> torch.Tensor:
    return sum(((c - m) / r) ** 2 for c, m, r in zip(coords, centre, radii)) < 1.0


def _smooth_texture(shape, generator, scale: int, device=None) -> torch.Tensor:
    """Band-limited random field of unit std (low-resolution noise upsampled)."""
    low = [max(2, n // scale) for n in shape]
    noise = torch.randn((1, 1, *low), generator=generator).to(device)
    mode = "bilinear" if len(shape) == 2 else "trilinear"
    field = F.interpolate(noise, size=tuple(shape), mode=mode, align_corners=False)[0, 0]
    return (field - field.mean()) / field.std().clamp_min(1e-6)


def _jitter(generator, n: int, amount: float) -> torch.Tensor:
    return 1.0 + amount * (2 * torch.rand(n, generator=generator) - 1)


def ct_phantom(shape: Sequence[int], generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """Chest-like CT phantom in HU, shape ``shape`` (H, W) or (H, W, D) (D = slice axis).

    Tissues (HU): air -1000, fat -100, soft tissue / muscle 40, blood 45 + contrast 250 in vessels,
    lung -850 with vessels at 40, cortical bone 1000, trabecular bone 250, heart 50.
    """
    coords = _grid(shape, device)
    y, x = coords[0], coords[1]
    # 3D: anatomy changes slowly along the slice axis
    z = coords[2] if len(shape) == 3 else torch.zeros_like(x)
    j = _jitter(generator, 8, 0.1)
    hu = torch.full(tuple(shape), -1000.0, device=device)
    body = _ellipse((y, x), (0.0, 0.0), (0.62 * j[0], 0.85 * j[1]))
    inner = _ellipse((y, x), (0.0, 0.0), (0.55 * j[0], 0.78 * j[1]))
    hu[body] = -100.0  # fat rim
    hu[inner] = 40.0
    for side in (-1.0, 1.0):
        lung = _ellipse((y, x), (-0.05, side * 0.38 * j[2]), (0.42 * j[3] * (1 - 0.2 * z.abs()), 0.26 * j[4]))
        hu[lung] = -850.0
        vessels = (_smooth_texture(shape, generator, 6, device) > 1.6) & lung
        hu[vessels] = 40.0
    heart = _ellipse((y, x), (0.05, 0.08 * j[5]), (0.25 * j[6], 0.22))
    hu[heart] = 50.0
    aorta = _ellipse((y, x), (0.28, -0.1), (0.07, 0.07))
    hu[aorta] = 300.0
    vertebra = _ellipse((y, x), (0.45, 0.0), (0.13 * j[7], 0.12))
    marrow = _ellipse((y, x), (0.45, 0.0), (0.09 * j[7], 0.08))
    hu[vertebra] = 1000.0
    hu[marrow] = 250.0
    soft = inner & (hu > -200) & (hu < 100)
    hu = hu + 12.0 * _smooth_texture(shape, generator, 4, device) * soft  # parenchymal texture
    return hu


def mr_phantom(shape: Sequence[int], generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """Brain-like magnitude MR phantom (T1-like contrast, max about 1), shape (H, W) or (H, W, D)."""
    coords = _grid(shape, device)
    j = _jitter(generator, 6, 0.08)
    radii = [0.8 * j[0], 0.68 * j[1], 0.75][: len(shape)]
    centre = [0.0] * len(shape)
    img = torch.zeros(tuple(shape), device=device)
    img[_ellipse(coords, centre, radii)] = 0.6  # scalp
    img[_ellipse(coords, centre, [r * 0.92 for r in radii])] = 0.1  # skull
    img[_ellipse(coords, centre, [r * 0.86 for r in radii])] = 0.25  # CSF
    img[_ellipse(coords, centre, [r * 0.82 for r in radii])] = 0.65  # grey matter
    folds = _smooth_texture(shape, generator, 5, device) > 0.3
    white = _ellipse(coords, centre, [r * 0.68 for r in radii]) & ~(folds & ~_ellipse(coords, centre, [r * 0.5 for r in radii]))
    img[white] = 0.9
    for side in (-1.0, 1.0):
        c = [0.0, side * 0.12 * j[2], 0.0][: len(shape)]
        img[_ellipse(coords, c, [0.22 * j[3], 0.07 * j[4], 0.3][: len(shape)])] = 0.25  # ventricles
    brain = img > 0.5
    return img * (1.0 + 0.04 * _smooth_texture(shape, generator, 3, device) * brain)
