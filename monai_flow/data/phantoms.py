"""Synthetic anatomical phantoms with a physical pixel size (noise-free ground truth).

``ct_phantom`` is an axial section of the lower chest in HU, at clinical size (a body about
300 x 220 mm): skin, subcutaneous fat with fibrous septa and small veins, chest-wall and
paraspinal muscles with fat striation, ribs and sternum (cortical shell, trabecular core, costal
cartilage), a thoracic vertebra (trabecular body, cortex, canal with cord, posterior elements),
both lungs (parenchyma texture with a gravity gradient, fissures, branching pulmonary arteries
(contrast-enhanced) and veins (not) from the hilum down to about 1 mm, bronchi with walls),
the heart (myocardium, enhanced chambers, epicardial fat, coronary arteries), descending aorta,
oesophagus, azygos vein, internal thoracic vessels and the liver dome under the right
hemidiaphragm (parenchyma texture, unenhanced hepatic veins).

``mr_phantom`` is a T1-weighted-like head: scalp (fat and muscle), skull (cortical tables and
fatty diploe), subarachnoid CSF, a folded cortical ribbon (gyri about 10 mm wide, sulci 10-20 mm
deep, cortex 2.5-3 mm thick), white matter, lateral / third ventricles, deep grey nuclei,
the interhemispheric and Sylvian fissures and, low in the head, cerebellum (folia) and
brainstem, in air.

How realism and speed are obtained:

- Everything is placed in millimetres (``spacing``), so vessel calibres, cortical thickness and
  texture wavelengths have physical size whatever the matrix.
- Partial volume: every structure is an implicit function (negative inside) or a tube around a
  segment, and a voxel takes the fraction of it that the structure covers (box filter of the
  voxel, first order in the boundary distance, exact for thin sheets and sub-voxel tubes), so
  edges are antialiased rather than staircased, without supersampling.
- Textures are band-limited Gaussian random fields with wavelengths in mm, synthesised by FFT on
  the voxel grid and averaged over the voxel (their variance falls at coarse pixel sizes, as a
  real acquisition's would).
- Vessel and bronchial trees are grown in 3D (Murray's law radii and branching angles), so in a
  volume they continue from slice to slice; only the part near the volume is generated, and vessels
  thinner than a fifth of a pixel are not grown.
- The CT image is finally blurred by an in-plane Gaussian point spread function of FWHM
  max(0.6 mm, 1 pixel), as a reconstruction is band-limited.
- ``return_labels=True`` also gives the tissue covering most of each voxel (``CT_LABELS`` /
  ``MR_LABELS``): tissues are textured and partial-volumed, so masks must come from the labels,
  not from exact HU values.

Orientation: images are ``(H, W)`` or ``(H, W, D)`` with H = anterior (row 0) to posterior,
W = the patient's right (column 0) to left, D = inferior (index 0) to superior; so ``hu[..., k]``
shows as a radiological axial image with ``imshow``. Both functions are deterministic under a
``torch.Generator`` (one draw from it per phantom) and vary in anatomy between draws.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch

__all__ = ["ct_phantom", "mr_phantom", "ct_default_spacing", "mr_default_spacing", "CT_LABELS", "MR_LABELS"]

#: label values of ``ct_phantom(..., return_labels=True)`` (the tissue covering most of a voxel)
CT_LABELS = {"air": 0, "lung": 1, "fat": 2, "muscle": 3, "soft_tissue": 4, "blood": 5, "bone": 6, "liver": 7,
             "airway": 8}
#: label values of ``mr_phantom(..., return_labels=True)``
MR_LABELS = {"background": 0, "scalp": 1, "skull": 2, "csf": 3, "grey_matter": 4, "white_matter": 5,
             "deep_grey": 6}

_F32 = torch.float32
_CT_MAX_HALF = (122.0, 170.0)      # largest body half depth / half width drawn (mm)
_MR_MAX_HALF = (86.0 + 18.5, 70.0 + 18.5)   # largest head half depth / half width (brain + CSF, skull, scalp)


def ct_default_spacing(shape: Sequence[int]) -> tuple[float, float, float]:
    """The isotropic voxel size (mm) ``ct_phantom`` uses when ``spacing`` is None: the largest body it
    draws (340 x 244 mm) fills 90 % of the field of view (0.74 mm at 512 x 512). Use it for headers."""
    s = max(2 * _CT_MAX_HALF[0] / (0.9 * shape[0]), 2 * _CT_MAX_HALF[1] / (0.9 * shape[1]))
    return (s, s, s)


def mr_default_spacing(shape: Sequence[int]) -> tuple[float, float, float]:
    """The isotropic voxel size (mm) ``mr_phantom`` uses when ``spacing`` is None: the largest head it
    draws (209 x 177 mm) fills 92 % of the in-plane field of view (~1.0 mm at 224 x 192)."""
    s = max(2 * _MR_MAX_HALF[0] / (0.92 * shape[0]), 2 * _MR_MAX_HALF[1] / (0.92 * shape[1]))
    return (s, s, s)


# ------------------------------------------------------------------------------------- geometry
def _spacing3(shape: Sequence[int], spacing, fit: float) -> tuple[float, float, float]:
    """(sy, sx, sz) in mm. ``spacing``: None (``fit``, isotropic), a number, or 2 / 3 numbers (a
    2-number spacing is in-plane; the slice spacing, or a 2D image's slice thickness, is then
    their minimum)."""
    if spacing is None:
        return (fit, fit, fit)
    s = [float(v) for v in np.atleast_1d(np.asarray(spacing, dtype=float))]
    if len(s) == 1:
        s = s * 3
    elif len(s) == 2:
        s = [s[0], s[1], min(s)]
    elif len(s) != 3:
        raise ValueError(f"spacing must be a number or 2 / 3 numbers (mm), got {spacing!r}.")
    if min(s) <= 0:
        raise ValueError(f"spacing must be positive, got {spacing!r}.")
    return (s[0], s[1], s[2])


def _check_shape(shape: Sequence[int]) -> tuple[int, int, int]:
    shape = tuple(int(n) for n in shape)
    if len(shape) not in (2, 3) or min(shape) < 1 or min(shape[:2]) < 2:
        raise ValueError(f"shape must be (H, W) or (H, W, D) with H, W >= 2, got {shape}.")
    return shape if len(shape) == 3 else (*shape, 1)


class _Canvas:
    """An image being painted, with voxel-centre coordinates in mm (y: rows, x: columns, z: slices;
    centred on the middle of the grid). ``paint`` mixes a value in by coverage (partial volume)."""

    def __init__(self, shape3, spacing3, background: float):
        self.shape = shape3
        self.spacing = spacing3
        self.axes = [(torch.arange(n, dtype=_F32) - (n - 1) / 2) * s for n, s in zip(shape3, spacing3)]
        self.img = torch.full(shape3, float(background), dtype=_F32)
        self.lab = torch.zeros(shape3, dtype=torch.uint8)

    def box(self, y0=-math.inf, y1=math.inf, x0=-math.inf, x1=math.inf):
        """Slices of the voxels whose centres lie in [y0, y1] x [x0, x1] mm (at least 2 each, so
        gradients exist), and their coordinates broadcastable as (h, 1, 1), (1, w, 1), (1, 1, D)."""
        sl = []
        for ax, lo, hi in zip(self.axes[:2], (y0, x0), (y1, x1)):
            n = len(ax)
            i0 = int(torch.searchsorted(ax, torch.tensor(lo, dtype=_F32))) if math.isfinite(lo) else 0
            i1 = int(torch.searchsorted(ax, torch.tensor(hi, dtype=_F32), right=True)) if math.isfinite(hi) else n
            i0, i1 = max(0, min(i0, n - 2)), min(n, max(i1, i0 + 2))
            sl.append(slice(i0, i1))
        y = self.axes[0][sl[0]].view(-1, 1, 1)
        x = self.axes[1][sl[1]].view(1, -1, 1)
        z = self.axes[2].view(1, 1, -1)
        return (sl[0], sl[1]), y, x, z

    def coverage(self, phi: torch.Tensor) -> torch.Tensor:
        """Fraction of each voxel inside ``phi < 0`` (first order: the boundary is locally a plane;
        the box filter of the voxel along the normal has width sum_i s_i |n_i|)."""
        width = torch.zeros((), dtype=_F32)
        for dim, s in enumerate(self.spacing):
            if phi.shape[dim] > 1:
                width = width + s * torch.gradient(phi, spacing=s, dim=dim)[0].abs()
        if not torch.is_tensor(width) or width.ndim == 0:
            width = torch.full_like(phi, min(self.spacing[:2]))
        return (0.5 - phi / width.clamp_min(1e-4)).clamp_(0.0, 1.0)

    def layers(self, phi: torch.Tensor) -> Callable[[float], torch.Tensor]:
        """Coverage of ``phi + offset < 0`` for any offset, the boundary width computed once."""
        width = torch.zeros((), dtype=_F32)
        for dim, s in enumerate(self.spacing):
            if phi.shape[dim] > 1:
                width = width + s * torch.gradient(phi, spacing=s, dim=dim)[0].abs()
        width = width.clamp_min(1e-4) if width.ndim else torch.full_like(phi, min(self.spacing[:2]))
        return lambda offset=0.0: (0.5 - (phi + offset) / width).clamp_(0.0, 1.0)

    def paint(self, sl, cover: torch.Tensor, value, label: int | None = None) -> None:
        """``img = img + cover (value - img)`` on the voxels ``sl``; ``label`` where cover > 1/2.
        ``value``: a number, a full-size tensor (cropped here) or a tensor of the crop's shape."""
        target = self.img[sl]
        if torch.is_tensor(value) and value.shape[:2] == self.shape[:2] and target.shape[:2] != self.shape[:2]:
            value = value[sl]
        target += cover * (value - target)
        if label is not None:
            self.lab[sl][(cover > 0.5).expand_as(target)] = label

    def fill(self, phi_fn: Callable, value, label: int | None = None, box=None) -> torch.Tensor:
        """Paint the inside of ``phi_fn(y, x, z)`` (mm, negative inside) within ``box`` (mm)."""
        sl, y, x, z = self.box(*(box or ()))
        phi = phi_fn(y, x, z)
        phi = torch.broadcast_to(phi, (y.shape[0], x.shape[1], phi.shape[2] if phi.ndim == 3 else 1)).contiguous()
        cover = self.coverage(phi)
        self.paint(sl, cover, value, label)
        return cover


def _radial(y, x, cy, cx, ry, rx, power=2.0, angle=0.0):
    """Signed radial distance (mm, negative inside) to a superellipse of half-axes (ry, rx),
    rotated by ``angle`` (rad, from +y towards +x). ``ry``, ``rx`` may be tensors (e.g. depend on z)."""
    dy, dx = y - cy, x - cx
    if angle:
        c, s = math.cos(angle), math.sin(angle)
        dy, dx = c * dy + s * dx, -s * dy + c * dx
    ry = torch.as_tensor(ry, dtype=_F32).clamp_min(1e-3)
    rx = torch.as_tensor(rx, dtype=_F32).clamp_min(1e-3)
    if power == 2.0:
        q = ((dy / ry).square() + (dx / rx).square()).sqrt()
    else:
        q = ((dy / ry).abs().pow(power) + (dx / rx).abs().pow(power)).pow(1.0 / power)
    r = (dy.square() + dx.square()).sqrt()
    rho = torch.where(r > 1e-4, r / q.clamp_min(1e-9), torch.minimum(ry, rx))  # boundary radius on this ray
    return r - rho


def _dome(z, top: float, height: float):
    """Cross-section scale of an ellipsoidal dome whose apex is at ``top`` (mm), semi-axis
    ``height`` along z: sqrt(1 - ((z - c) / height)^2), 0 above the apex."""
    u = ((z - (top - height)) / height).clamp(-1.0, 1.0)
    return (1.0 - u.square()).clamp_min(0.0).sqrt()


def _segment_coverage(py, px, pz, a, b, ra, rb, spacing, zscale=1.0, shell=None):
    """Coverage of the tube (capsule with radius ra -> rb) from ``a`` to ``b`` (mm, (y, x, z)) at
    voxel centres (py, px, pz) (broadcastable numpy arrays); z is stretched by ``zscale`` (> 1
    flattens the tube along z). Box filter along the normal, with the tube's own width when it is
    thinner than the voxel (sub-voxel vessels get coverage ~ their area fraction)."""
    sy, sx, sz = spacing
    az, bz, pz = a[2] * zscale, b[2] * zscale, pz * zscale
    d = (b[0] - a[0], b[1] - a[1], bz - az)
    dd = d[0] ** 2 + d[1] ** 2 + d[2] ** 2
    vy, vx, vz = py - a[0], px - a[1], pz - az
    t = np.clip((vy * d[0] + vx * d[1] + vz * d[2]) / max(dd, 1e-12), 0.0, 1.0)
    ny, nx, nz = vy - t * d[0], vx - t * d[1], vz - t * d[2]
    dist = np.sqrt(ny * ny + nx * nx + nz * nz)
    inv = 1.0 / np.maximum(dist, 1e-6)
    width = sy * np.abs(ny) * inv + sx * np.abs(nx) * inv + sz * zscale * np.abs(nz) * inv
    width = np.where(dist > 1e-6, width, min(sy, sx))
    r = ra + (rb - ra) * t
    lo = np.maximum(-r, dist - width / 2)
    hi = np.minimum(r, dist + width / 2)
    cov = np.clip(hi - lo, 0.0, None) / width * np.minimum(1.0, 2 * r / width)
    return cov


class _Tubes:
    """Renders tubes (segments with tapered radii) into a max-combined coverage buffer."""

    def __init__(self, canvas: _Canvas):
        self.c = canvas
        self.np_axes = [a.numpy().astype(np.float64) for a in canvas.axes]

    def render(self, segs: np.ndarray, zscale: float = 1.0, radius_offset: float = 0.0) -> torch.Tensor:
        """``segs`` (N, 8): y0 x0 z0 y1 x1 z1 r0 r1 (mm). Returns a coverage tensor (H, W, D)."""
        buf = np.zeros(self.c.shape, dtype=np.float32)
        ya, xa, za = self.np_axes
        sy, sx, sz = self.c.spacing
        zlo, zhi = za[0] - sz, za[-1] + sz
        for s in segs:
            a, b = s[0:3], s[3:6]
            ra, rb = max(s[6] + radius_offset, 0.05), max(s[7] + radius_offset, 0.05)
            r = max(ra, rb) + max(sy, sx)
            rz = r / zscale + sz
            if min(a[2], b[2]) - rz > zhi or max(a[2], b[2]) + rz < zlo:
                continue
            iy = np.searchsorted(ya, [min(a[0], b[0]) - r, max(a[0], b[0]) + r])
            ix = np.searchsorted(xa, [min(a[1], b[1]) - r, max(a[1], b[1]) + r])
            iz = np.searchsorted(za, [min(a[2], b[2]) - rz, max(a[2], b[2]) + rz])
            if iy[0] >= iy[1] or ix[0] >= ix[1] or iz[0] >= iz[1]:
                continue
            py = ya[iy[0]:iy[1], None, None]
            px = xa[None, ix[0]:ix[1], None]
            pz = za[None, None, iz[0]:iz[1]]
            cov = _segment_coverage(py, px, pz, a, b, ra, rb, self.c.spacing, zscale)
            view = buf[iy[0]:iy[1], ix[0]:ix[1], iz[0]:iz[1]]
            np.maximum(view, cov, out=view)
        return torch.from_numpy(buf)


def _sheet_coverage(dist: torch.Tensor, thickness: float, width: torch.Tensor) -> torch.Tensor:
    """Coverage of a sheet of ``thickness`` (mm) at unsigned distance ``dist`` from its middle,
    by a voxel of extent ``width`` along the sheet normal (1D box overlap)."""
    lo = torch.maximum(torch.full_like(dist, -thickness / 2), dist - width / 2)
    hi = torch.minimum(torch.full_like(dist, thickness / 2), dist + width / 2)
    return (hi - lo).clamp_min(0.0) / width


def _level_sheet(f: torch.Tensor, spacing, thickness: float) -> torch.Tensor:
    """Coverage of a sheet of ``thickness`` mm around the zero level set of the field ``f``."""
    grads = [torch.gradient(f, spacing=s, dim=d)[0] if f.shape[d] > 1 else torch.zeros_like(f)
             for d, s in enumerate(spacing)]
    norm = torch.sqrt(sum(g.square() for g in grads)).clamp_min(1e-6)
    width = sum(s * g.abs() for s, g in zip(spacing, grads)) / norm
    width = torch.where(norm > 1e-5, width, torch.full_like(f, min(spacing[:2]))).clamp_min(0.5 * min(spacing[:2]))
    return _sheet_coverage(f.abs() / norm, thickness, width)


# ------------------------------------------------------------------------------------- textures
def _band_field(shape3, spacing3, wavelength: float, generator: torch.Generator, octave: float = 0.6,
                stretch: Sequence[float] = (1.0, 1.0, 1.0)) -> torch.Tensor:
    """Gaussian random field, unit variance in the continuum, log-normal band around
    1/``wavelength`` cycles/mm (``octave``: log-width), averaged over the voxel (so sub-voxel
    texture has less variance at coarse pixels). ``stretch`` scales frequencies per axis (> 1:
    shorter structures along that axis)."""
    H, W, D = shape3
    sy, sx, sz = spacing3
    dims = 3 if D > 1 else 2
    ky = torch.fft.fftfreq(H, d=sy).view(-1, 1, 1) * stretch[0]
    kx = torch.fft.fftfreq(W, d=sx).view(1, -1, 1) * stretch[1]
    kz = (torch.fft.rfftfreq(D, d=sz) * stretch[2]).view(1, 1, -1) if D > 1 else torch.zeros(1, 1, 1)
    k = (ky.square() + kx.square() + kz.square()).sqrt()
    k0 = 1.0 / wavelength

    def amplitude(kk):
        return torch.exp(-0.5 * (torch.log(kk.clamp_min(1e-9) / k0) / octave) ** 2) * (kk > 0)

    filt = amplitude(k)
    # continuum normalisation: voxel volume x integral of amplitude^2 over d-dim frequency space
    kk = torch.linspace(1e-4, 20 * k0, 20000, dtype=torch.float64)
    sphere = 2 * math.pi if dims == 2 else 4 * math.pi
    integral = float(torch.trapezoid(amplitude(kk) ** 2 * kk ** (dims - 1), kk)) * sphere
    volume = sy * sx * (sz if dims == 3 else 1.0)
    stretch_jac = stretch[0] * stretch[1] * (stretch[2] if dims == 3 else 1.0)
    scale = 1.0 / math.sqrt(volume * integral / stretch_jac)
    sinc = (torch.sinc(torch.fft.fftfreq(H, d=sy) * sy).view(-1, 1, 1)
            * torch.sinc(torch.fft.fftfreq(W, d=sx) * sx).view(1, -1, 1))
    if D > 1:
        sinc = sinc * torch.sinc(torch.fft.rfftfreq(D, d=sz) * sz).view(1, 1, -1)
    noise = torch.randn(shape3, generator=generator, dtype=_F32)
    if D > 1:
        spec = torch.fft.rfftn(noise)
        return torch.fft.irfftn(spec * (filt * sinc * scale), s=shape3).to(_F32)
    spec = torch.fft.fft2(noise[..., 0])
    return torch.fft.ifft2(spec * (filt * sinc * scale)[..., 0]).real.to(_F32)[..., None]


def _rng_from(generator: torch.Generator | None) -> tuple[np.random.Generator, torch.Generator]:
    """One draw from the caller's generator seeds everything (a numpy RNG for geometry, a torch
    generator for the noise fields)."""
    seed = int(torch.randint(0, 2**62, (1,), generator=generator).item())
    return np.random.default_rng(seed), torch.Generator().manual_seed(seed ^ 0x5DEECE66D)


# --------------------------------------------------------------------------------------- trees
def _perpendicular(d: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    v = rng.standard_normal(d.shape)
    v -= (v * d).sum(1, keepdims=True) * d
    return v / np.linalg.norm(v, axis=1, keepdims=True).clip(1e-9)


def _rotate(d: np.ndarray, axis: np.ndarray, angle: np.ndarray) -> np.ndarray:
    """Rotate unit vectors ``d`` about unit ``axis`` (perpendicular to d) by ``angle``."""
    c, s = np.cos(angle)[:, None], np.sin(angle)[:, None]
    return d * c + np.cross(axis, d) * s


def _grow_tree(rng, pos, direction, radius, inside: Callable, r_min: float, zrange: tuple[float, float],
               attract: np.ndarray | None = None, max_segments: int = 20000, length=(7.0, 12.0),
               max_length: float = 25.0, reach: float = 30.0, tags=None):
    """Grow vessel trees from roots (N, 3) in (y, x, z) mm. Each segment is ``length`` x its
    radius long; at its end the vessel bifurcates by Murray's law (r^3 = r1^3 + r2^3, asymmetry
    random) at the minimum-work angles, in a random plane, children pushed away from the boundary
    of ``inside`` (signed distance, mm, negative inside, of points (M, 3)) and spread outwards
    from ``attract``. Branches stop below ``r_min``, outside the region, or too far in z from
    ``zrange`` to come back (``reach`` radii + 5 mm). ``r_min`` may differ per root; ``tags`` (one
    per root) are inherited. Returns segments (M, 8), the generation and the tag of each."""
    pos, d, r = np.asarray(pos, float), np.asarray(direction, float), np.asarray(radius, float)
    tag = np.arange(len(r)) if tags is None else np.asarray(tags)
    rmin = np.broadcast_to(np.asarray(r_min, float), r.shape).copy()
    d = d / np.linalg.norm(d, axis=1, keepdims=True)
    out, gens, out_tags = [], [], []
    generation = 0
    eps = 1.0
    total = 0
    while len(r) and total < max_segments:
        n = len(r)
        L = np.minimum(r * rng.uniform(*length, n), max_length)
        end = pos + d * L[:, None]
        phi = inside(end)
        bad = phi > -0.6 * r
        if bad.any():  # try a shorter step before giving up
            end[bad] = pos[bad] + d[bad] * (0.5 * L[bad])[:, None]
            phi[bad] = inside(end[bad])
            bad = phi > -0.6 * r
        ok = ~bad
        pos, d, r, end, phi, tag, rmin = pos[ok], d[ok], r[ok], end[ok], phi[ok], tag[ok], rmin[ok]
        if not len(r):
            break
        r_end = r * 0.96
        out.append(np.concatenate([pos, end, r[:, None], r_end[:, None]], 1))
        gens.append(np.full(len(r), generation))
        out_tags.append(tag)
        total += len(r)
        # children
        alpha = rng.uniform(0.35, 1.0, len(r))
        r1 = r_end / np.cbrt(1 + alpha**3)
        r2 = alpha * r1
        cos1 = (r_end**4 + r1**4 - r2**4) / (2 * r_end**2 * r1**2)
        cos2 = (r_end**4 + r2**4 - r1**4) / (2 * r_end**2 * r2**2)
        th1 = np.arccos(np.clip(cos1, -1, 1)) + rng.normal(0, 0.12, len(r))
        th2 = np.arccos(np.clip(cos2, -1, 1)) + rng.normal(0, 0.12, len(r))
        axis = _perpendicular(d, rng)
        d1, d2 = _rotate(d, axis, th1), _rotate(d, axis, -th2)
        # away from the boundary (finite-difference gradient of the signed distance) and outwards
        near = phi > -(4.0 * r_end + 3.0)      # the push only acts near the boundary
        grad = np.zeros_like(end)
        if near.any():
            grad[near] = (inside(np.concatenate([end[near] + eps * e for e in np.eye(3)])).reshape(3, -1).T
                          - phi[near, None]) / eps
        push = np.clip(1.0 + phi / (4.0 * r_end + 3.0), 0.0, 1.0)[:, None] * grad
        spread = 0.0
        if attract is not None:
            away = end - (attract[tag] if len(attract) > 1 else attract)
            spread = 0.15 * away / np.linalg.norm(away, axis=1, keepdims=True).clip(1e-6)
        children = []
        for dc, rc in ((d1, r1), (d2, r2)):
            dc = dc - 0.8 * push + spread
            dc /= np.linalg.norm(dc, axis=1, keepdims=True).clip(1e-9)
            children.append((end, dc, rc))
        pos = np.concatenate([c[0] for c in children])
        d = np.concatenate([c[1] for c in children])
        r = np.concatenate([c[2] for c in children])
        tag, rmin = np.concatenate([tag, tag]), np.concatenate([rmin, rmin])
        # stop small ones and those unlikely to reach the z range any more (``reach`` radii + 5 mm)
        far = np.maximum(zrange[0] - pos[:, 2], pos[:, 2] - zrange[1])
        keep = (r >= rmin) & (far < r * reach + 5.0)
        pos, d, r, tag, rmin = pos[keep], d[keep], r[keep], tag[keep], rmin[keep]
        generation += 1
    if not out:
        return np.zeros((0, 8)), np.zeros(0, int), np.zeros(0, int)
    return np.concatenate(out), np.concatenate(gens), np.concatenate(out_tags)


# ------------------------------------------------------------------------------------------- CT
def _points_fn(phi: Callable) -> Callable:
    """``phi(y, x, z)`` on tensors -> a function of numpy points (N, 3)."""
    def f(p):
        t = torch.from_numpy(np.ascontiguousarray(p, dtype=np.float32))
        return phi(t[:, 0], t[:, 1], t[:, 2]).numpy().astype(float)
    return f


def _union(*phis):
    m = phis[0]
    for p in phis[1:]:
        m = torch.minimum(m, p)
    return m


def ct_phantom(shape: Sequence[int], generator: torch.Generator | None = None, device=None,
               spacing: float | Sequence[float] | None = None, return_labels: bool = False):
    """Lower-chest CT phantom in HU, shape ``shape`` = (H, W) or (H, W, D) (H anterior -> posterior,
    W patient's right -> left, D inferior -> superior).

    Args:
        shape: (H, W) or (H, W, D).
        generator: torch.Generator (one draw per phantom); anatomy varies between draws.
        device: device of the result (it is computed on the CPU).
        spacing: voxel size in mm: a number (isotropic), (rows, columns) or (rows, columns,
            slices); a 2D image's third value is its slice thickness. Default
            ``ct_default_spacing(shape)``: isotropic, the largest body (340 x 244 mm; bodies are
            300-340 x 210-244 mm) fills 90 % of the field of view (0.74 mm at 512 x 512).
        return_labels: also return a uint8 map of the tissue covering most of each voxel
            (``CT_LABELS``).

    Returns:
        float32 HU tensor of ``shape`` (and the label map). Tissues (HU): air -1000; lung
        parenchyma about -860 (dependent lung denser, fine texture); fat -100 (septa); muscle 50
        (fat striation); liver 60-70; myocardium 70-100; unenhanced blood 40-70 (lung veins, systemic
        and hepatic veins); contrast-enhanced blood: pulmonary arteries / right heart 210-430,
        left heart / aorta / coronaries 100-250; cortical bone 850-1150; trabecular bone 100-400
        (porous pattern); costal cartilage 120; CSF 10.
    """
    shape3 = _check_shape(shape)
    rng, tgen = _rng_from(generator)
    A = rng.uniform(150, 170)          # body half width (left-right), mm
    B = rng.uniform(105, 122)          # body half depth (anterior-posterior), mm
    sp = _spacing3(shape, spacing, ct_default_spacing(shape3)[0])
    cv = _Canvas(shape3, sp, -1000.0)
    tubes = _Tubes(cv)
    L = CT_LABELS
    full = (slice(None), slice(None))
    Y, X, Z = cv.axes[0].view(-1, 1, 1), cv.axes[1].view(1, -1, 1), cv.axes[2].view(1, 1, -1)
    zr = (float(Z.min()) - sp[2], float(Z.max()) + sp[2])
    contrast = rng.uniform(0.55, 1.0)
    right_blood = 45 + contrast * rng.uniform(300, 380)   # pulmonary arterial phase: right heart, arteries
    left_blood = 45 + contrast * rng.uniform(100, 200)    # left heart, aorta, coronaries
    vein_blood = 42 + contrast * rng.uniform(0, 25)       # lung veins, systemic veins: barely enhanced
    myocardium = 65 + contrast * 30

    fine = _band_field(shape3, sp, 1.8, tgen, 0.45)       # textures: unit variance, wavelength in mm
    medium = _band_field(shape3, sp, 5.0, tgen, 0.5)
    coarse = _band_field(shape3, sp, 16.0, tgen, 0.5)
    trab = _band_field(shape3, sp, 3.5, tgen, 0.3)

    # ---------------------------------------------------------------- layout (mm; y posterior, x left)
    y_vb = B - rng.uniform(62, 68)                         # vertebral body centre
    canal_y = y_vb + 24.5
    wall_ant, wall_lat = rng.uniform(22, 32), rng.uniform(18, 26)
    gutter = y_vb + rng.uniform(18, 24)                    # deepest posterior lung, beside the spine
    cy_cav = ((-B + wall_ant) + gutter) / 2
    Bc, Ac = (gutter - (-B + wall_ant)) / 2, A - wall_lat
    indent = gutter - (y_vb - 12)                          # the spine pushes the cavity forward at the midline
    rib_zone = 8.0
    wob = rng.normal(0, 0.012, (4, 2))
    n_ant, n_post = rng.uniform(2.1, 2.5), rng.uniform(2.8, 3.6)

    def body_phi(y, x, z, inset=0.0):
        th = torch.atan2(y, x)
        zs = 1 + sum(wob[m, 0] * torch.cos((m + 2) * th) + wob[m, 1] * torch.sin((m + 2) * th) for m in range(4))
        w = torch.sigmoid(y / 15.0)
        return (1 - w) * _radial(y, x, 0.0, 0.0, B * zs, A * zs, n_ant) + w * _radial(y, x, 0.0, 0.0, B * zs, A * zs, n_post) + inset

    def spine_bump(y, x):
        return indent * torch.exp(-0.5 * (x / 24.0) ** 2) * torch.sigmoid((y - cy_cav) / 10.0)

    def cavity_phi(y, x, z, grow=0.0):
        return _radial(y, x, cy_cav, 0.0, Bc + grow, Ac + grow, 2.4) + spine_bump(y, x)

    skin = rng.uniform(1.5, 2.2)
    fat_t, fat_var = rng.uniform(9, 24), rng.normal(0, 0.2, 3)

    def fat_depth(y, x):
        th = torch.atan2(y, x)
        return fat_t * (1 + fat_var[0] * torch.cos(th) + fat_var[1] * torch.sin(2 * th) + fat_var[2] * torch.cos(3 * th)
                        + 0.4 * torch.sigmoid(y / 30)).clamp_min(0.35)

    beta = rng.uniform(0.6, 0.9)                   # heart long axis: anterior-left, angle from -y towards +x
    eu, ev = (-math.cos(beta), math.sin(beta)), (math.sin(beta), math.cos(beta))   # long axis; across (posterior-left)
    ha, hb = rng.uniform(52, 60), rng.uniform(39, 45)
    half_y = math.hypot(ha * math.cos(beta), hb * math.sin(beta))
    hc = (y_vb - 15 - rng.uniform(14, 20) - half_y, rng.uniform(14, 24))
    h_top = rng.uniform(35, 70)                    # top of the heart, mm above the middle slice

    def heart_frame(u0, v0, ru, rv, top=None, height=90.0, grow=0.0):
        cy, cx = hc[0] + u0 * eu[0] + v0 * ev[0], hc[1] + u0 * eu[1] + v0 * ev[1]
        top = h_top if top is None else top
        return lambda y, x, z: _radial(y, x, cy, cx, rv * _dome(z, top, height) + grow, ru * _dome(z, top, height) + grow,
                                       2.0, math.pi / 2 - beta)

    heart = heart_frame(0.0, 0.0, ha, hb)
    liv_top = rng.uniform(8, 35)                   # right hemidiaphragm dome apex, mm above the middle slice
    liv_c = (cy_cav - Bc * rng.uniform(0.2, 0.35), -Ac * rng.uniform(0.62, 0.72))

    def liver_phi(y, x, z, grow=0.0):
        s = _dome(z, liv_top, 110.0)
        return torch.maximum(_radial(y, x, liv_c[0], liv_c[1], Bc * 1.1 * s + grow, Ac * 0.75 * s + grow, 2.2),
                             cavity_phi(y, x, z) + 0.5 - grow)

    ao_r = rng.uniform(10, 13)
    ao_c = (y_vb - rng.uniform(12, 16), rng.uniform(20, 26))
    es_c = (y_vb - rng.uniform(24, 28), rng.uniform(0, 8))
    az_c = (y_vb - rng.uniform(8, 12), -rng.uniform(11, 14))

    def vertebra_phi(y, x, z, grow=0.0):
        return _radial(y, x, y_vb, 0.0, 15.0 + grow, 18.0 + grow, 2.6)

    ant_w = rng.uniform(10, 18)

    def mediastinum_phi(y, x, z):
        return _union(heart(y, x, z) - 4.0,
                      _radial(y, x, ao_c[0], ao_c[1], ao_r + 3, ao_r + 3),
                      _radial(y, x, es_c[0], es_c[1], 11.0, 12.0),
                      _radial(y, x, (es_c[0] + hc[0] + half_y) / 2, es_c[1], 14.0, 14.0),
                      vertebra_phi(y, x, z, 3.0),
                      _radial(y, x, cy_cav - Bc, hc[1] * 0.3, 24.0, ant_w, 2.5))

    def lung_phi(y, x, z):
        return torch.maximum(torch.maximum(cavity_phi(y, x, z) + 1.0, -mediastinum_phi(y, x, z)), -liver_phi(y, x, z, 5.0))

    # ---------------------------------------------------------------- body wall
    cv.fill(body_phi, 30.0 + 4 * medium, L["soft_tissue"])                                     # skin
    septa = _level_sheet(_band_field(shape3, sp, 30.0, tgen, 0.5) + 0.2 * medium, sp, 0.2)   # fibrous septa, ~1-2 cm apart
    cv.fill(lambda y, x, z: body_phi(y, x, z, skin), -102 + 2 * fine + 2 * medium + 110 * septa, L["fat"])
    stripes = torch.sin(2 * math.pi * (-cavity_phi(Y, X, Z)) / rng.uniform(5.0, 8.0) + 2.5 * coarse + 0.8 * medium)
    striation = _level_sheet(stripes, sp, 0.2) * (coarse > 0.8)
    cv.fill(lambda y, x, z: torch.maximum(cavity_phi(y, x, z) - rib_zone - 16.0, body_phi(y, x, z, skin) + fat_depth(y, x)),
            52 + 3 * fine + 2 * medium - 120 * striation, L["muscle"])
    for side in (-1, 1):   # paraspinal muscles (erector spinae), a fat plane between them and the wall muscles
        pc = (canal_y + rng.uniform(12, 16), side * rng.uniform(25, 29))
        pr = (rng.uniform(17, 21), rng.uniform(19, 23))
        box = (pc[0] - pr[0] - 6, pc[0] + pr[0] + 6, pc[1] - pr[1] - 6, pc[1] + pr[1] + 6)
        sl, y, x, z = cv.box(*box)
        ell = torch.maximum(_radial(y, x, pc[0], pc[1], pr[0], pr[1], 2.5), body_phi(y, x, z, skin + 5.0))
        cv.paint(sl, _level_sheet(torch.broadcast_to(ell, (y.shape[0], x.shape[1], z.shape[2])).contiguous(), sp, 0.6), -60.0)
        plane = (x - pc[1]) * math.cos(0.3 * side) + (y - pc[0]) * math.sin(0.3 * side) + rng.uniform(-5, 5)
        plane = plane + 3 * coarse[sl]
        sep = _level_sheet(plane, sp, 0.4) * (ell < -1)
        cv.paint(sl, sep, -70.0)
    cv.fill(lambda y, x, z: cavity_phi(y, x, z) - rib_zone, 48 + 3 * fine, L["muscle"])        # intercostal muscles

    # ---------------------------------------------------------------- lungs
    cv.fill(cavity_phi, -92 + 4 * fine, L["fat"])                                              # mediastinal fat
    lung_value = -865 + 40 * ((Y - cy_cav) / Bc).clamp(-1, 1) + 15 * fine + 7 * medium + 5 * coarse
    lung_cover = cv.fill(lung_phi, lung_value, L["lung"])
    for side in (-1, 1):   # major fissures: thin oblique sheets
        n = np.array([rng.uniform(0.5, 0.8), side * rng.uniform(0.3, 0.6), rng.uniform(0.6, 0.9)])
        n /= np.linalg.norm(n)
        x0 = side * Ac * 0.5
        dist = n[0] * (Y - cy_cav) + n[1] * (X - x0) + n[2] * Z + rng.uniform(-15, 15) + 0.002 * (X - x0).square()
        width = torch.tensor(sum(s * abs(c) for s, c in zip(sp, n)), dtype=_F32)
        sheet = _sheet_coverage(torch.broadcast_to(dist.abs(), shape3).contiguous(), 0.3, width)
        cv.paint(full, sheet * lung_cover * (X * side > 25).float(), -30.0)

    inside_lung = _points_fn(lung_phi)
    roots = []   # (start (N, 3), direction (N, 3), radius (N,), r_min (N,), is_artery (N,), hilum (N, 3))
    stems = []
    margin = 14.0
    r_min = max(0.45, 0.2 * min(sp[:2]))      # thinner vessels would not show in a voxel this size
    for side in (-1, 1):
        hil = np.array([hc[0] + half_y * 0.6, side * 30.0, 0.0])
        for _ in range(40):       # the hilum sits just inside the medial lung surface
            if inside_lung(hil[None])[0] < -4:
                break
            hil[1] += side * 2.5
        # hilar trunks (lobar / segmental arteries and veins): a few generations down to 1.6 mm
        n = int(rng.integers(16, 24))
        start = hil[None] + np.stack([rng.normal(0, 8, n), side * np.abs(rng.normal(0, 3, n)),
                                      rng.uniform(zr[0] - 40, zr[1] + 40, n)], 1)
        dirs = np.stack([rng.normal(0, 0.7, n), side * (0.9 + np.abs(rng.normal(0, 0.5, n))), rng.normal(0, 0.8, n)], 1)
        roots.append((start, dirs, rng.uniform(2.8, 4.5, n), np.full(n, max(1.6, r_min)), rng.uniform(0, 1, n) < 0.5,
                      np.repeat(hil[None], n, 0)))
        # peripheral subtrees: roots spread through the lung near the slab, calibre falling with the
        # distance from the hilum (which spans several cm craniocaudally), pointing away from it,
        # each with a stem continuing back towards it
        vol_box = np.array([[cy_cav - Bc, cy_cav + Bc], sorted([0.0, side * Ac]), [zr[0] - margin, zr[1] + margin]])
        n = int(np.prod(vol_box[:, 1] - vol_box[:, 0]) / 9.0**3)
        pts = vol_box[:, 0] + rng.uniform(0, 1, (n, 3)) * (vol_box[:, 1] - vol_box[:, 0])
        n = len(pts)
        hil_pts = hil + np.stack([rng.normal(0, 6, n), np.zeros(n), rng.uniform(-70, 70, n)], 1)
        away = pts - hil_pts
        dist = np.linalg.norm(away, axis=1, keepdims=True).clip(1e-6)
        away /= dist
        radius = 0.5 + 2.2 * np.exp(-dist[:, 0] / 32.0) + rng.uniform(0, 0.3, n)
        artery = rng.uniform(0, 1, n) < 0.5
        back = np.minimum(radius * rng.uniform(5, 9, n), dist[:, 0] * 0.5)
        stems.append((np.concatenate([pts - away * back[:, None], pts, (radius * 1.12)[:, None], radius[:, None]], 1), artery))
        roots.append((pts, away + rng.normal(0, 0.45, away.shape), radius, np.full(n, r_min), artery, hil_pts))
    start, dirs, radius, rmin, artery, hil_pts = (np.concatenate(v) for v in zip(*roots))
    stem_segs, stem_art = (np.concatenate(v) for v in zip(*stems))
    ok = (radius >= rmin) & (inside_lung(start) < -2.5)
    segs, _, tag = _grow_tree(rng, start[ok], dirs[ok], radius[ok], inside_lung, rmin[ok], zr, reach=22.0,
                              tags=np.flatnonzero(ok), attract=hil_pts)
    keep = (stem_segs[:, 7] >= r_min) & (inside_lung(stem_segs[:, 3:6]) < -2.5)
    stem_segs, stem_art = stem_segs[keep], stem_art[keep]
    trees = {"artery": [segs[artery[tag]], stem_segs[stem_art]], "vein": [segs[~artery[tag]], stem_segs[~stem_art]]}
    arteries, veins = np.concatenate(trees["artery"]), np.concatenate(trees["vein"])
    cv.paint(full, tubes.render(veins) * lung_cover, vein_blood + 6 * fine, L["blood"])
    cv.paint(full, tubes.render(arteries) * lung_cover, right_blood * 0.92 + 8 * fine, L["blood"])
    big = arteries[arteries[:, 6] >= 1.2]          # a bronchus beside each artery of r >= 1.2 mm, same calibre
    if len(big):
        d = big[:, 3:6] - big[:, 0:3]
        d /= np.linalg.norm(d, axis=1, keepdims=True).clip(1e-9)
        u = np.array([0.25, 0.35, 0.9])
        off = u - (d @ u)[:, None] * d
        off /= np.linalg.norm(off, axis=1, keepdims=True).clip(1e-9)
        shift = off * (big[:, 6:7] * 2.1 + 0.5)
        br = np.concatenate([big[:, 0:3] + shift, big[:, 3:6] + shift, big[:, 6:8]], 1)
        cv.paint(full, tubes.render(br) * lung_cover, -40.0 + 10 * fine, L["soft_tissue"])
        br[:, 6:8] = br[:, 6:8] * 0.78 - 0.2
        cv.paint(full, tubes.render(br) * lung_cover, -985.0, L["airway"])

    # ---------------------------------------------------------------- liver dome
    cv.fill(lambda y, x, z: liver_phi(y, x, z, 4.0), 50 + 3 * fine, L["muscle"])              # diaphragm
    liver_cover = cv.fill(liver_phi, 58 + contrast * 12 + 4 * fine + 3 * medium + 2 * coarse, L["liver"])
    if float(liver_cover.max()) > 0.5:
        ivc = np.array([liv_c[0] + Bc * 0.5, -rng.uniform(10, 20), liv_top - 60.0])
        n = 6
        dirs = np.stack([rng.normal(-0.5, 0.5, n), rng.normal(-0.4, 0.6, n), 1.0 + rng.uniform(0, 1, n)], 1)
        hv, _, _ = _grow_tree(rng, ivc[None] + rng.normal(0, 4, (n, 3)), dirs, rng.uniform(3.5, 5.0, n),
                           _points_fn(liver_phi), 0.6, zr, attract=ivc[None], length=(8, 14), max_length=30, reach=40.0)
        if len(hv):
            cv.paint(full, tubes.render(hv) * liver_cover, vein_blood - 5 + 3 * fine, L["blood"])

    # ---------------------------------------------------------------- heart
    cv.fill(lambda y, x, z: heart(y, x, z) - 4.5, 25.0, L["soft_tissue"])                      # pericardium
    cv.fill(lambda y, x, z: heart(y, x, z) - 3.5, -95 + 4 * fine, L["fat"])                    # epicardial fat
    coronary = []
    for u_frac, v_sign in ((-0.35, -1), (-0.35, 1), (0.7, -1)):   # RCA, LCx (AV groove), LAD (interventricular)
        u = u_frac * ha + rng.uniform(-4, 4)
        v = v_sign * (hb * math.sqrt(max(1 - (u / ha) ** 2, 0.05)) + 1.8)
        p = np.array([hc[0] + u * eu[0] + v * ev[0], hc[1] + u * eu[1] + v * ev[1]])
        cv.fill(lambda y, x, z, p=p: _radial(y, x, p[0], p[1], 5.0, 5.0), -95 + 4 * fine, L["fat"],
                box=(p[0] - 8, p[0] + 8, p[1] - 8, p[1] + 8))
        t = rng.normal(0, 1, 3) * [8, 8, 0] + [0, 0, 40]
        r = rng.uniform(1.1, 1.7)
        coronary.append(np.concatenate([[*p, 0.0] - t, [*p, 0.0] + t, [r, r * 0.9]]))
    cv.fill(heart, myocardium + 4 * fine, L["soft_tissue"])
    lv = heart_frame(0.08 * ha, 0.25 * hb, 0.58 * ha, 0.42 * hb)
    rv = heart_frame(-0.05 * ha, -0.5 * hb, 0.72 * ha, 0.42 * hb)
    atria_top = h_top - rng.uniform(0, 15)
    ra = heart_frame(-0.62 * ha, -0.3 * hb, 0.3 * ha, 0.45 * hb, atria_top, 45.0)
    la = heart_frame(-0.65 * ha, 0.35 * hb, 0.3 * ha, 0.45 * hb, atria_top, 40.0)

    def wall(t):   # the inside of the heart, ``t`` mm in from its surface (chambers stay within)
        return lambda y, x, z: heart(y, x, z) + t

    cv.fill(lambda y, x, z: torch.maximum(torch.maximum(rv(y, x, z), -lv(y, x, z) - 9.0), wall(3.5)(y, x, z)),
            right_blood + 6 * medium, L["blood"])
    cv.fill(lambda y, x, z: torch.maximum(lv(y, x, z), wall(10.0)(y, x, z)), left_blood + 4 * medium, L["blood"])
    cv.fill(lambda y, x, z: torch.maximum(ra(y, x, z), wall(2.5)(y, x, z)), right_blood * 0.85 + 12 * medium, L["blood"])
    cv.fill(lambda y, x, z: torch.maximum(la(y, x, z), wall(2.5)(y, x, z)), left_blood + 4 * medium, L["blood"])
    for k in (-1, 1):   # papillary muscles
        cv.fill(heart_frame(0.3 * ha, 0.25 * hb + k * 0.2 * hb, 4.5, 3.5), myocardium + 4 * fine, L["soft_tissue"])
    cv.paint(full, tubes.render(np.array(coronary)), left_blood + 4 * fine, L["blood"])

    # ---------------------------------------------------------------- posterior mediastinum
    cv.fill(lambda y, x, z: _radial(y, x, ao_c[0], ao_c[1], ao_r + 1.6, ao_r + 1.6), 45.0, L["soft_tissue"])
    cv.fill(lambda y, x, z: _radial(y, x, ao_c[0], ao_c[1], ao_r, ao_r), left_blood + 4 * medium, L["blood"])
    if rng.uniform() < 0.6:   # a calcified plaque in the aortic wall
        a = rng.uniform(0, 2 * math.pi)
        p = np.array([ao_c[0] + (ao_r + 0.7) * math.cos(a), ao_c[1] + (ao_r + 0.7) * math.sin(a), rng.uniform(-4, 4)])
        cv.paint(full, tubes.render(np.array([np.concatenate([p - [0, 0, 3], p + [0, 0, 3], [1.0, 0.8]])]), zscale=0.5),
                 750.0, L["bone"])
    cv.fill(lambda y, x, z: _radial(y, x, es_c[0], es_c[1], 7.5, 9.5), 42 + 3 * fine, L["soft_tissue"])
    if rng.uniform() < 0.6:
        cv.fill(lambda y, x, z: _radial(y, x, es_c[0], es_c[1], 1.5, 3.5), -950.0, L["airway"])
    cv.fill(lambda y, x, z: _radial(y, x, az_c[0], az_c[1], 3.5, 4.0), vein_blood, L["blood"])

    # ---------------------------------------------------------------- spine
    pores = torch.sigmoid((trab - 0.55) / 0.18)           # marrow spaces (~1-2 mm) in a bony lattice
    trab_value = 300 - 230 * pores + 12 * fine
    cortex = rng.uniform(850, 1150)
    disc_z = rng.uniform(11, 16) * (1 if rng.uniform() < 0.5 else -1)   # nearest disc, mm from the middle slice
    box = (y_vb - 22, y_vb + 22, -25, 25)
    cv.fill(vertebra_phi, cortex, L["bone"], box=box)
    sl, y, x, z = cv.box(*box)
    inner = cv.coverage(torch.broadcast_to(vertebra_phi(y, x, z, -1.3), (y.shape[0], x.shape[1], z.shape[2])).contiguous())
    dw = torch.sigmoid((4.0 - (z - disc_z).abs()) / 0.8)
    cv.paint(sl, inner, (1 - dw) * trab_value[sl] + dw * (85 + 5 * fine[sl]), L["bone"])
    cv.paint(full, tubes.render(np.array([[y_vb + 14.5, 0, -400, y_vb + 7, 0, 400, 1.3, 1.0]]), zscale=0.01), 45.0,
             L["soft_tissue"])                                                                 # basivertebral vein
    elems = []   # posterior elements: (y0, x0, y1, x1, radius)
    for side in (-1, 1):
        elems += [(y_vb + 10, side * 11.5, canal_y, side * 12.5, 4.0),             # pedicle
                  (canal_y + 2, side * 12.0, canal_y + 11, side * 3, 3.2),         # lamina
                  (canal_y, side * 13, canal_y + 7, side * 30, 3.8)]               # transverse process
    elems.append((canal_y + 10, 0, min(canal_y + 36, B - skin - 12), 0, 3.5))     # spinous process
    segs = np.array([[e[0], e[1], -400.0, e[2], e[3], 400.0, e[4], e[4]] for e in elems])
    cv.paint(full, tubes.render(segs, zscale=0.01), cortex * 0.9, L["bone"])
    segs[:, 6:8] -= 1.4
    cv.paint(full, tubes.render(segs, zscale=0.01), trab_value, L["bone"])
    cv.fill(lambda y, x, z: _radial(y, x, canal_y, 0.0, 8.0, 9.0), -70 + 4 * fine, L["fat"])        # epidural fat
    cv.fill(lambda y, x, z: _radial(y, x, canal_y - 0.5, 0.0, 6.8, 7.8), 8 + 2 * fine, L["soft_tissue"])   # CSF
    cv.fill(lambda y, x, z: _radial(y, x, canal_y - 1.0, 0.0, 3.8, 4.6), 35 + 2 * fine, L["soft_tissue"])  # cord

    # ---------------------------------------------------------------- ribs, costal cartilage, sternum
    ribs, cart = [], []
    z_post = rng.uniform(-14, 14) + np.arange(-8, 9) * rng.uniform(24, 28)
    drop = rng.uniform(55, 80)       # a rib descends this much from the spine to its anterior end
    psi = np.linspace(0.0, 1.0, 48)
    for side in (-1, 1):
        ang = 0.5 * math.pi - side * (0.3 + psi * (math.pi - 0.38))
        rr = 1.0 + rib_zone / 2 / min(Ac, Bc)
        py = cy_cav + Bc * rr * np.sin(ang)
        px = Ac * rr * np.cos(ang)
        py -= spine_bump(torch.from_numpy(py), torch.from_numpy(px)).numpy()
        py[0], px[0] = canal_y + 6, side * 30                       # tubercle, at the transverse process
        end = rng.uniform(0.8, 0.86)
        for zk in z_post:
            pts = np.stack([py, px, zk - drop * psi**1.4], 1)
            for i in range(len(psi) - 1):
                (cart if psi[i] > end else ribs).append(np.concatenate([pts[i], pts[i + 1], [3.3, 3.3]]))
            ribs.append(np.concatenate([[y_vb + 4, side * 17, zk + 2], pts[0], [3.0, 3.3]]))   # neck and head
    ribs, cart = np.array(ribs), np.array(cart)
    cv.paint(full, tubes.render(cart, zscale=0.5), 120 + 8 * fine, L["soft_tissue"])
    cv.paint(full, tubes.render(ribs, zscale=0.5), cortex, L["bone"])
    ribs[:, 6:8] -= 1.1
    cv.paint(full, tubes.render(ribs, zscale=0.5), trab_value, L["bone"])
    st_y = cy_cav - Bc - rib_zone / 2
    cv.fill(lambda y, x, z: _radial(y, x, st_y, 0.0, 6.5, 14.0, 2.5), cortex * 0.8, L["bone"])
    cv.fill(lambda y, x, z: _radial(y, x, st_y, 0.0, 5.3, 12.8, 2.5), trab_value, L["bone"])

    # ---------------------------------------------------------------- small vessels in the wall
    small = {left_blood: [], vein_blood: []}
    for side in (-1, 1):   # internal thoracic artery and vein, behind the costal cartilages
        for dx, val in ((0.0, left_blood), (5.0, vein_blood)):
            p = np.array([st_y + 8, side * (19 + dx), 0.0])
            r = rng.uniform(0.9, 1.4)
            small[val].append(np.concatenate([p - [0, 0, 80], p + [2, 1, 80], [r, r]]))
    for a in rng.uniform(0, 2 * math.pi, 16):   # subcutaneous veins
        yy, xx = torch.tensor(math.sin(a) * B), torch.tensor(math.cos(a) * A)
        depth = skin + rng.uniform(0.3, 0.7) * float(fat_depth(yy, xx))
        p = np.array([math.sin(a) * (B - depth), math.cos(a) * (A - depth), rng.uniform(-20, 20)])
        t = rng.normal(0, 1, 3) * [10, 10, 30]
        r = rng.uniform(0.5, 1.3)
        small[vein_blood].append(np.concatenate([p - t, p + t, [r, r]]))
    for val, segs in small.items():
        cv.paint(full, tubes.render(np.array(segs)), val + 4 * fine, L["blood"])
    # the scanner's in-plane point spread function (a reconstruction is band-limited)
    cv.img = _gaussian_blur_inplane(cv.img, [max(0.6, s) / 2.355 / s for s in sp[:2]]).clamp_min_(-1000.0)
    return _finish(cv, shape, device, return_labels)


def _gaussian_blur_inplane(img: torch.Tensor, sigmas_px: Sequence[float]) -> torch.Tensor:
    """Separable Gaussian blur of (H, W, D) along H and W (sigmas in pixels), edges replicated."""
    out = img.permute(2, 0, 1)[:, None]                        # (D, 1, H, W)
    for dim, sigma in zip((2, 3), sigmas_px):
        radius = max(1, int(math.ceil(3 * sigma)))
        t = torch.arange(-radius, radius + 1, dtype=_F32)
        k = torch.exp(-0.5 * (t / sigma) ** 2)
        k = (k / k.sum()).view(1, 1, -1, 1) if dim == 2 else (k / k.sum()).view(1, 1, 1, -1)
        pad = (0, 0, radius, radius) if dim == 2 else (radius, radius, 0, 0)
        out = torch.nn.functional.conv2d(torch.nn.functional.pad(out, pad, mode="replicate"), k)
    return out[:, 0].permute(1, 2, 0).contiguous()


def _finish(cv: _Canvas, shape, device, return_labels: bool):
    img, lab = (cv.img, cv.lab) if len(shape) == 3 else (cv.img[..., 0], cv.lab[..., 0])
    if device is not None:
        img, lab = img.to(device), lab.to(device)
    return (img.contiguous(), lab.contiguous()) if return_labels else img.contiguous()


# ------------------------------------------------------------------------------------------- MR
def _lattice_field(extent: float, step: float, wavelength: float, generator: torch.Generator) -> torch.Tensor:
    """Band-limited unit-variance field on a cube lattice [-extent, extent]^3 mm with ``step`` mm
    spacing, (1, 1, Nz, Ny, Nx) for ``grid_sample``."""
    n = int(math.ceil(2 * extent / step)) + 1
    f = _band_field((n, n, n), (step, step, step), wavelength, generator, 0.35)
    f = f / f.std().clamp_min(1e-6)
    return f.permute(2, 0, 1)[None, None].contiguous()   # (z, y, x)


def _sample(lattice: torch.Tensor, extent: float, y, x, z) -> torch.Tensor:
    """Trilinear samples of a ``_lattice_field`` at points (y, x, z) mm (broadcastable tensors)."""
    y, x, z = torch.broadcast_tensors(y, x, z)
    grid = torch.stack([x, y, z], -1) / extent           # grid_sample wants (x, y, z) -> (W, H, D)
    shape = grid.shape[:-1]
    out = torch.nn.functional.grid_sample(lattice, grid.reshape(1, 1, 1, -1, 3), mode="bilinear",
                                          padding_mode="border", align_corners=True)
    return out.reshape(shape)


def mr_phantom(shape: Sequence[int], generator: torch.Generator | None = None, device=None,
               spacing: float | Sequence[float] | None = None, return_labels: bool = False):
    """T1-weighted-like head MR phantom (magnitude, maximum about 1), shape (H, W) or (H, W, D)
    (H anterior -> posterior, W patient's right -> left, D inferior -> superior; a 2D image is
    the axial slice through the basal ganglia and lateral ventricles).

    Args:
        shape: (H, W) or (H, W, D).
        generator: torch.Generator (one draw per phantom); anatomy varies between draws.
        device: device of the result (it is computed on the CPU).
        spacing: voxel size in mm (a number, (rows, columns) or (rows, columns, slices)). Default
            ``mr_default_spacing(shape)``: isotropic, the largest head (209 x 177 mm) fills 92 % of the
            in-plane field of view (1.01 mm at 224 x 192; a 160^3 volume comes at 1.42 mm; for 1 mm
            ask for it, e.g. ``spacing=1.0`` with (208, 176, D) or more).
        return_labels: also return a uint8 map of the tissue covering most of each voxel
            (``MR_LABELS``).

    Intensities: white matter 0.82-0.88, cortical grey matter 0.5-0.58, deep grey nuclei 0.6-0.7,
    CSF 0.1-0.15, scalp / orbital fat 0.95-1.0, diploe 0.6-0.75, cortical bone and air ~0,
    muscle 0.4; a smooth receive-field modulation of +-4 %.
    """
    shape3 = _check_shape(shape)
    rng, tgen = _rng_from(generator)
    H, W, D = shape3
    # brain (cerebrum) half-axes and head layers, mm
    ry, rx, rz = rng.uniform(78, 86), rng.uniform(63, 70), rng.uniform(60, 68)
    csf_t, skull_t, scalp_t = rng.uniform(1.5, 3.5), rng.uniform(6, 8), rng.uniform(5, 7)
    outer = csf_t + skull_t + scalp_t
    sp = _spacing3(shape, spacing, mr_default_spacing(shape3)[0])
    cv = _Canvas(shape3, sp, 0.0)
    tubes = _Tubes(cv)
    L = MR_LABELS
    full = (slice(None), slice(None))
    Y, X, Z = cv.axes[0].view(-1, 1, 1), cv.axes[1].view(1, -1, 1), cv.axes[2].view(1, 1, -1)
    cy, cz = rng.uniform(2, 8), rng.uniform(12, 18)          # cerebrum centre (x = 0); z = 0: basal ganglia
    fine = _band_field(shape3, sp, 2.0, tgen, 0.5)
    medium = _band_field(shape3, sp, 8.0, tgen, 0.5)
    bias = 1 + 0.04 * _band_field(shape3, sp, 180.0, tgen, 0.5)

    wm_v, gm_v, deep_v, csf_v = rng.uniform(0.82, 0.88), rng.uniform(0.5, 0.58), rng.uniform(0.6, 0.68), rng.uniform(0.1, 0.15)
    fat_v, marrow_v, muscle_v, skin_v = rng.uniform(0.95, 1.0), rng.uniform(0.6, 0.75), rng.uniform(0.38, 0.44), 0.55

    def floor(y, x):   # inferior limit of the cerebrum: frontal fossa, temporal lobes lower, tentorium
        temporal = torch.exp(-0.5 * ((y + 5) / 28) ** 2) * torch.sigmoid((x.abs() - 28) / 5)
        return -18 - 6 * torch.sigmoid((y - cy) / 10) - 28 * temporal

    def cerebrum_phi(y, x, z, grow=0.0):
        e = _radial(y, torch.sqrt(x.square() + ((z - cz) * rx / rz).square()), cy, 0.0, ry + grow, rx + grow, 2.2)
        return torch.maximum(e, floor(y, x) - z - grow)

    cb_c = (cy + rng.uniform(42, 48), rng.uniform(-38, -33))     # cerebellum (y, z)

    def cerebellum_phi(y, x, z, grow=0.0):
        return _radial(y, torch.sqrt((x.abs() * 0.95).square() + ((z - cb_c[1]) * 2.0).square()), cb_c[0], 0.0,
                       27 + grow, 50 + grow, 2.3)

    def brainstem_phi(y, x, z, grow=0.0):   # midbrain, pons (widest), medulla, continuing as the cord
        r = 10.5 + 3.5 * torch.exp(-0.5 * ((z + 30) / 9) ** 2) - 3.5 * torch.sigmoid(-(z + 55) / 6)
        yc = cy + 14 + 0.15 * (z + 30)
        return _radial(y, x, yc, 0.0, r * 0.85 + grow, r + grow)

    cer = cerebrum_phi(Y, X, Z)
    ic = _union(cer, cerebellum_phi(Y, X, Z), torch.maximum(brainstem_phi(Y, X, Z, 2.0), Z - 5.0))
    neck_r = rng.uniform(52, 60)
    neck = _radial(Y, X, cy + 12, 0.0, neck_r, neck_r * 1.05)
    neck_w = torch.sigmoid(-(Z + 55) / 6)                    # below the skull base the head becomes the neck
    head = torch.minimum(ic - outer, neck + 200 * (1 - neck_w))
    head_cov = cv.layers(head)
    ic_cov = cv.layers(ic)

    # ---------------------------------------------------------------- scalp, skull, CSF (and the neck)
    cv.paint(full, head_cov(0.0), skin_v + 0.02 * fine, L["scalp"])
    cv.paint(full, head_cov(1.2), fat_v + 0.02 * fine, L["scalp"])
    temporal_fossa = torch.maximum(torch.maximum(0.7 * rx - X.abs(), (Y - cy + 5).abs() - 45.0), Z - 30.0)
    cv.paint(full, ic_cov(-(csf_t + skull_t + 5.0)) * cv.coverage(temporal_fossa), muscle_v + 0.02 * fine, L["scalp"])
    cv.paint(full, head_cov(6.0) * neck_w, muscle_v + 0.02 * fine, L["scalp"])          # neck muscles
    cv.paint(full, ic_cov(-(csf_t + skull_t)) * (1 - neck_w), 0.03, L["skull"])          # outer table
    cv.paint(full, ic_cov(-(csf_t + skull_t - 1.6)) * (1 - neck_w), marrow_v + 0.05 * medium, L["skull"])   # diploe
    cv.paint(full, ic_cov(-(csf_t + 1.6)) * (1 - neck_w), 0.03, L["skull"])             # inner table
    cv.paint(full, ic_cov(-csf_t), csf_v, L["csf"])
    if float(neck_w.max()) > 0.01:   # cervical vertebra (dark cortex, marrow) around the cord
        cv.fill(lambda y, x, z: _radial(y, x, cy + 12, 0.0, 14.0, 14.0) + 30 * (1 - torch.sigmoid(-(z + 70) / 4)),
                0.03, L["skull"])
        cv.fill(lambda y, x, z: _radial(y, x, cy + 12, 0.0, 12.5, 12.5) + 30 * (1 - torch.sigmoid(-(z + 70) / 4)),
                marrow_v * 0.8, L["skull"])
        cv.fill(lambda y, x, z: _radial(y, x, cy + 32, 0.0, 8.0, 9.0) + 30 * (1 - neck_w), csf_v, L["csf"])

    # ---------------------------------------------------------------- eyes, orbits, sinuses (low slices)
    for side in (-1, 1):
        eye = (cy - ry - 2, side * 32.0, -32.0)
        box = (eye[0] - 25, eye[0] + 40, eye[1] - 25, eye[1] + 25)
        cv.fill(lambda y, x, z, e=eye: _radial(y, torch.sqrt((x - e[1]).square() + (z - e[2]).square()), e[0] + 12, 0.0,
                                               28.0, 16.0), fat_v, L["scalp"], box=box)                        # orbital fat
        cv.fill(lambda y, x, z, e=eye: _radial(y, torch.sqrt((x - e[1]).square() + (z - e[2]).square()), e[0], 0.0,
                                               12.0, 12.0), 0.45, L["scalp"], box=box)                          # sclera
        cv.fill(lambda y, x, z, e=eye: _radial(y, torch.sqrt((x - e[1]).square() + (z - e[2]).square()), e[0], 0.0,
                                               11.0, 11.0), 0.12, L["csf"], box=box)                            # vitreous
    cv.fill(lambda y, x, z: _radial(y, torch.sqrt(x.square() + ((z + 50) * 0.7).square()), cy - ry + 10, 0.0, 22.0, 14.0),
            0.0, L["background"])                                                                               # sinuses

    # ---------------------------------------------------------------- cerebrum: folded cortex
    # sulci: zero set of a smooth field sampled at the (warped) radial projection of each point onto a
    # sphere, so the sheets stand roughly normal to the surface; computed on a half-resolution grid
    ext = 80.0
    lam = rng.uniform(17, 21)
    fold = _lattice_field(ext, 1.5, lam, tgen)
    warp = [_lattice_field(ext, 3.0, 35.0, tgen) for _ in range(3)]
    depth_f = _lattice_field(ext, 3.0, 40.0, tgen)
    step = 2 if min(sp) < 2.0 else 1
    cy_h, cx_h = cv.axes[0][::step].view(-1, 1, 1), cv.axes[1][::step].view(1, -1, 1)
    cz_h = cv.axes[2][::step].view(1, 1, -1)
    k, R0 = 0.3, 62.0

    def fold_at(y, x, z):
        py_, px, pz = y - cy, x, z - cz
        rr = torch.sqrt(px.square() + py_.square() + pz.square()).clamp_min(5.0)
        s = R0 * (1 - k) / rr + k
        u = [py_ * s, px * s, pz * s]
        w = [_sample(f, ext, *u) for f in warp]
        return _sample(fold, ext, *[c + 4.0 * wc for c, wc in zip(u, w)])

    def upsample(t):
        if step == 1:
            return t
        size = (H, W, D) if D > 1 else (H, W)
        t = t[None, None] if D > 1 else t[None, None, ..., 0]
        out = torch.nn.functional.interpolate(t, size=size, mode="trilinear" if D > 1 else "bilinear", align_corners=False)
        return out[0, 0] if D > 1 else out[0, 0][..., None]

    s_half = fold_at(cy_h, cx_h, cz_h)
    hs = tuple(s * step for s in sp)
    grads = [torch.gradient(s_half, spacing=hs[d], dim=d)[0] for d in (0, 1) if s_half.shape[d] > 1]
    if s_half.shape[2] > 1:
        grads.append(torch.gradient(s_half, spacing=hs[2], dim=2)[0])
    else:   # a 2D slice: the z derivative from two extra samples
        grads.append(fold_at(cy_h, cx_h, cz_h + 0.5) - fold_at(cy_h, cx_h, cz_h - 0.5))
    gnorm = torch.sqrt(sum(g.square() for g in grads)).clamp_min(1e-4)
    sheet_dist = upsample(s_half / gnorm).abs()       # mm to the nearest sulcal sheet (signed, then abs)
    sulc_depth = 11.0 + 10.0 * torch.sigmoid(1.5 * upsample(_sample(depth_f, ext, cy_h - cy, cx_h, cz_h - cz)))
    midline_w = rng.uniform(1.5, 3.0)
    cc_top = rng.uniform(24, 30)

    def midline_dist(y, x, z):   # distance to the interhemispheric fissure (open above the corpus callosum)
        open_ = torch.sigmoid((z - cc_top) / 2.0) + torch.sigmoid((y - cy - 40) / 4) + torch.sigmoid(-(y - cy + 38) / 4)
        return x.abs() - midline_w / 2 + 200 * (1 - open_.clamp(0, 1))

    syl = []   # Sylvian fissures: oblique sheets over the insula
    for side in (-1, 1):
        syl.append((side, rng.uniform(36, 42), rng.uniform(-0.25, -0.1)))

    def sylvian_dist(y, x, z):
        d = torch.full(torch.broadcast_shapes(y.shape, x.shape, z.shape), 1e3)
        for side, xs, tilt in syl:
            plane = (x * side - xs - tilt * (z - cz + 5)).abs()
            inside = torch.sigmoid((30 - (y - cy + 5).abs()) / 4) * torch.sigmoid((22 - (z - cz + 2).abs()) / 4)
            d = torch.minimum(d, plane + 200 * (1 - inside))
        return d

    outer_depth = -cer
    mid = midline_dist(Y, X, Z)
    syl_d = sylvian_dist(Y, X, Z)
    surface = torch.minimum(torch.minimum(outer_depth, mid), syl_d - 0.5)
    # sulci: sheets of CSF from the surface down to their depth; the pial distance is to the surface or a sulcus
    in_sulcus_depth = sulc_depth - surface
    sulc = torch.sqrt(in_sulcus_depth.clamp(max=0).square() + (sheet_dist - 0.5).clamp_min(0).square())
    pial = torch.minimum(surface, sulc)
    thick = rng.uniform(2.4, 2.9) + 0.3 * medium
    cerebrum_cover = cv.coverage(cer)
    cv.paint(full, cerebrum_cover, gm_v + 0.025 * fine + 0.02 * medium, L["grey_matter"])
    sulc_sheet = _sheet_coverage(sheet_dist, rng.uniform(0.8, 1.4), torch.full_like(sheet_dist, float(min(sp[:2])))) \
        * torch.sigmoid(in_sulcus_depth / 0.7) * cerebrum_cover
    cv.paint(full, sulc_sheet, csf_v)
    mid_sheet = (0.5 - mid / sp[1]).clamp(0, 1) * cerebrum_cover
    cv.paint(full, mid_sheet, csf_v, L["csf"])
    syl_sheet = _sheet_coverage(syl_d, 2.0, torch.full_like(syl_d, float(min(sp)))) * cerebrum_cover
    cv.paint(full, syl_sheet, csf_v, L["csf"])
    wm_phi = thick - pial
    wm_cover = cv.coverage(wm_phi) * cerebrum_cover
    cv.paint(full, wm_cover, wm_v + 0.015 * fine + 0.015 * medium, L["white_matter"])

    # ---------------------------------------------------------------- deep grey nuclei, ventricles
    nuclei = []
    for side in (-1, 1):
        nuclei += [((cy - 16, side * 13.5, 5.0), (10.0, 5.0, 9.0), deep_v - 0.03),      # caudate head
                   ((cy - 3, side * 23.0, 0.0), (17.0, 6.0, 11.0), deep_v - 0.02),      # putamen
                   ((cy - 4, side * 17.0, -1.0), (12.0, 3.5, 8.0), deep_v + 0.06),       # globus pallidus
                   ((cy + 10, side * 9.5, 3.0), (14.0, 8.5, 10.0), deep_v + 0.03)]      # thalamus
    for (ny, nx, nz), (ay, ax, az), val in nuclei:
        box = (ny - ay - 4, ny + ay + 4, nx - ax - 4, nx + ax + 4)
        cv.fill(lambda y, x, z, c=(ny, nx, nz), a=(ay, ax, az): _radial(
            y, torch.sqrt((x - c[1]).square() + ((z - c[2]) * a[1] / a[2]).square()), c[0], 0.0, a[0], a[1]),
            val + 0.02 * fine, L["deep_grey"], box=box)
    vent = []   # lateral ventricles: tubes through frontal horn, body, atrium, occipital and temporal horns
    for side in (-1, 1):
        path = [((cy - 33, 9, 0), 3.0), ((cy - 20, 9, 3), 4.5), ((cy - 2, 10, 12), 4.5),
                ((cy + 16, 13, 14), 4.5), ((cy + 28, 21, 5), 6.0), ((cy + 45, 17, 1), 2.5)]
        temporal = [((cy + 28, 21, 5), 5.0), ((cy + 18, 28, -10), 3.5), ((cy + 0, 30, -22), 2.5)]
        for pth in (path, temporal):
            for (p0, r0), (p1, r1) in zip(pth[:-1], pth[1:]):
                vent.append([p0[0], side * p0[1], p0[2], p1[0], side * p1[1], p1[2], r0, r1])
    vent = np.array(vent, dtype=float)
    vent[:, 6:8] *= rng.uniform(0.8, 1.3)    # ventricle size varies between subjects
    vcov = tubes.render(vent, zscale=0.6)
    cv.paint(full, vcov, csf_v, L["csf"])
    third = np.array([[cy - 8, 0.0, 2.0, cy + 12, 0.0, -2.0, 2.0, 2.0]])
    cv.paint(full, tubes.render(third, zscale=0.3), csf_v, L["csf"])
    # perivascular spaces: a few small dark dots / lines in the white matter
    pvs = rng.uniform(-1, 1, (40, 3)) * [ry * 0.6, rx * 0.6, rz * 0.5] + [cy, 0, cz]
    dirs = rng.normal(0, 1, (40, 3)) * [0.3, 0.3, 1.0]
    pv = np.concatenate([pvs - 3 * dirs, pvs + 3 * dirs, np.full((40, 2), 0.45)], 1)
    cv.paint(full, tubes.render(pv) * wm_cover, csf_v + 0.2, None)

    # ---------------------------------------------------------------- cerebellum, brainstem, 4th ventricle
    cb_cover = cv.fill(cerebellum_phi, gm_v + 0.02 * fine, L["grey_matter"])
    if float(cb_cover.max()) > 0:
        # folia: fissures are sheets at fixed angles around the cerebellum's transverse axis (transverse
        # stripes in axial slices, a fan in sagittal ones), ~3.5 mm apart at the surface, 8-12 mm deep
        cbd = -cerebellum_phi(Y, X, Z)
        theta = torch.atan2(Z - cb_c[1] + 6, Y - cb_c[0] + 12 + 0.006 * X.square())
        n_f = 2 * math.pi * 38.0 / rng.uniform(3.2, 3.8)
        folia = torch.sin(n_f * theta + 1.2 * medium)
        fol = _level_sheet(folia, sp, 0.6) * torch.sigmoid((9.0 + 3 * torch.sin(n_f / 6 * theta) - cbd) / 0.8) * cb_cover
        cv.paint(full, fol, csf_v)
        arbor = torch.sigmoid((cbd - 13.0 + 5 * torch.sin(n_f / 5 * theta).abs() - 2 * folia) / 0.8) * cb_cover
        cv.paint(full, arbor, wm_v - 0.04, L["white_matter"])
        cv.fill(lambda y, x, z: _radial(y, torch.sqrt(x.square() + ((z - cb_c[1] - 2) * 0.6).square()), cb_c[0] - 20, 0.0,
                                        4.0, 7.0), csf_v, L["csf"])                                              # 4th ventricle
    cv.fill(lambda y, x, z: torch.maximum(brainstem_phi(y, x, z), z - 5.0), wm_v - 0.1 + 0.02 * fine, L["white_matter"])

    cv.img.mul_(bias).clamp_(min=0.0)
    return _finish(cv, shape, device, return_labels)
