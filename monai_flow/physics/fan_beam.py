"""Fan-beam CT geometry (third generation, full 360 degree scan): projector, fan-beam FBP, noise gain.

Conventions (those of :mod:`.ct_geometry`, extended): an axial slice is (N, H, W), rows along y
(``dy`` mm), columns along x (``dx`` mm), the image centre is the rotation centre. At view
``beta_i = 2 pi i / V`` the source sits at ``S = R (-sin beta, cos beta)`` (``R`` = source to
isocentre, mm). Channel k sees the ray at fan angle ``gamma_k`` from the central ray, the line
``x cos(beta + gamma) + y sin(beta + gamma) = R sin(gamma)``: the parallel-beam ray of angle
``theta = beta + gamma`` at signed distance ``s = R sin(gamma)`` from the isocentre. Detector:

- ``"arc"`` (equiangular, clinical): channels of pitch ``c`` mm on an arc of radius ``D`` (source to
  detector) centred on the source, ``gamma_k = (k - (K - 1)/2 + offset) c / D``;
- ``"flat"`` (equispaced, ASTRA's and ODL's ``fanflat``): ``u_k = (k - (K - 1)/2 + offset) c`` on a line
  at distance ``D`` from the source, ``gamma_k = atan(u_k / D)``.

A pixel at ``x`` is seen at view beta at the fan angle ``gamma' = atan2(a, U)`` and distance
``L = sqrt(a^2 + U^2)`` from the source, with ``a = x cos(beta) + y sin(beta)`` and
``U = R + x sin(beta) - y cos(beta)`` (distance along the central ray).

Two fan-beam FBPs, both with the fan-beam weighting and on CPU and GPU in torch:

- ``method="fourier"`` (default, fast): the fan-beam inversion formula in the ray coordinates
  (theta, s), with the Jacobian ``ds dtheta = R cos(gamma) dgamma dbeta`` as weight (the fan-beam
  cosine weighting), evaluated without interpolating the data across rays: each channel's views
  are shifted in angle by ``gamma_k`` with an FFT phase (a unitary trigonometric interpolation:
  white noise keeps its variance exactly), the ramp filter is a nonuniform DFT over the channels'
  true positions ``s_k`` (one matrix product), and the backprojection is the NUFFT adjoint of
  :class:`~.ct_geometry.ParallelBeamGeometry` (band-limited to the image grid).
- ``method="direct"``: the textbook pixel-driven fan-beam FBP (Kak & Slaney, ch. 3.4): cosine
  pre-weighting, convolution on the detector with the fan-beam ramp (``(gamma / sin gamma)^2`` for
  the arc), backprojection with the ``1/L^2`` (arc) or ``R^2/U^2`` (flat) weight, linear
  interpolation of the 4x band-limited upsampled filtered views, chunked over views. O(V H W):
  the reference implementation, several times slower.

Projection: line integrals of the slice along every fan ray, looked up (bilinear in angle and
position) in a finely sampled parallel-beam sinogram of the Fourier-slice projector (a fan ray is
a parallel-beam ray); used for the noise variance of each ray, 0.1 - 1 % accurate on a body.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch

from .ct_geometry import ParallelBeamGeometry, _fast_fft_size, _ramp_filter, kernel_response, sample_line_integrals
from .ct_scan import DETECTOR_SHAPES, check_slice_geometry

__all__ = ["FanBeamGeometry", "fan_beam_geometry"]

_BP_ELEMENTS = 8_000_000  # pixel x view x slice elements per backprojection chunk (memory bound)
_SPREAD_ELEMENTS = 64_000_000  # complex samples x kernel cells per NUFFT adjoint call (~0.5 GB)


class FanBeamGeometry:
    """Fan-beam geometry of an (H, W) slice: projector, fan-beam FBP (two methods) and noise gain.

    Args:
        shape: slice shape (H, W); spacing: pixel spacing (dy, dx) in mm.
        num_views: views evenly spaced over 360 degrees.
        num_channels: detector channels K.
        source_isocentre: source to rotation centre distance R, mm.
        source_detector: source to detector distance D, mm (> R).
        channel_pitch: channel pitch at the detector, mm (arc length for the arc detector).
        detector_shape: "arc" (equiangular) or "flat" (equispaced).
        detector_offset: channel grid shift, in channels.
        filter_name: "ramp" (Ram-Lak), "shepp-logan" or "hann".
        kernel_width: NUFFT kernel width (4: ~1e-3 relative accuracy).
        device, dtype: where the precomputed tables live.
    """

    def __init__(
        self,
        shape: tuple[int, int],
        spacing: tuple[float, float],
        num_views: int = 1152,
        num_channels: int = 736,
        source_isocentre: float = 595.0,
        source_detector: float = 1085.6,
        channel_pitch: float = 1.2858,
        detector_shape: str = "arc",
        detector_offset: float = 0.25,
        filter_name: str = "ramp",
        kernel_width: int = 4,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.shape, self.spacing = check_slice_geometry(shape, spacing, num_views, filter_name)
        if num_channels < 2:
            raise ValueError(f"num_channels must be >= 2, got {num_channels}.")
        if detector_shape not in DETECTOR_SHAPES:
            raise ValueError(f"detector_shape must be one of {DETECTOR_SHAPES}, got {detector_shape!r}.")
        if not source_detector > source_isocentre > 0:
            raise ValueError(f"source_detector ({source_detector}) must exceed source_isocentre ({source_isocentre}) > 0.")
        self.num_views, self.num_bins = int(num_views), int(num_channels)
        self.source_isocentre, self.source_detector = float(source_isocentre), float(source_detector)
        self.channel_pitch, self.detector_shape = float(channel_pitch), detector_shape
        self.detector_offset, self.filter_name = float(detector_offset), filter_name
        complex_dtype = torch.complex128 if dtype == torch.float64 else torch.complex64
        self.dtype, self.complex_dtype = dtype, complex_dtype
        r, d, pitch, k = self.source_isocentre, self.source_detector, self.channel_pitch, self.num_bins

        index = torch.arange(k, dtype=torch.float64) - (k - 1) / 2 + self.detector_offset
        if detector_shape == "arc":
            self.gamma = index * pitch / d
            self.dgamma = torch.full_like(self.gamma, pitch / d)
        else:
            u = index * pitch
            self.gamma = torch.atan(u / d)
            self.dgamma = pitch * d / (d * d + u * u)
        if float(self.gamma.abs().max()) >= math.pi / 2:
            raise ValueError("channel_pitch: the fan spans 180 degrees or more.")
        self.s = r * torch.sin(self.gamma)  # parallel-beam coordinate of each channel's rays, mm (float64, CPU)
        self.ray_spacing = r * torch.cos(self.gamma) * self.dgamma  # ds per channel at the isocentre, mm
        self.bin_spacing = r * pitch / d  # a central channel at the isocentre, mm
        self.field_of_view = min(-float(self.s[0]), float(self.s[-1]))  # radius every view covers, mm
        self.beta = torch.arange(self.num_views, dtype=torch.float64) * 2 * math.pi / self.num_views

        # ---- Fourier fan-beam FBP tables
        dy, dx = self.spacing
        half_diagonal = 0.5 * math.hypot(self.shape[0] * dy, self.shape[1] * dx)
        s_max = float(self.s.abs().max())
        # the filtered projection is periodic in s with period 1 / d_omega: at least twice the largest
        # distance between a pixel's ray and a channel's, so the ramp kernel does not wrap onto the image
        self.padded_bins = _fast_fft_size(int(math.ceil(2 * (half_diagonal + s_max) / self.bin_spacing)))
        lp = self.padded_bins
        self._d_omega = 1.0 / (lp * self.bin_spacing)
        omega = torch.arange(lp // 2 + 1, dtype=torch.float64) * self._d_omega  # cycles / mm, up to 1 / (2 d)
        # the band-limited ramp of a detector with the central channel's spacing (Kak & Slaney; its DC value
        # is exact for the finite period, |omega| would leave a 0.4 % offset), apodised
        self._filter_1d = _ramp_filter(lp, self.bin_spacing, filter_name)[: len(omega)]
        weights = torch.full_like(omega, 2.0)  # each positive frequency stands for its negative twin
        weights[0] = 1.0
        if lp % 2 == 0:
            weights[-1] = 1.0  # trapezoid end point at the cutoff
        self._omega, self._weights = omega, weights
        theta = self.beta  # the angle grid the channels are shifted onto
        xi_y = (omega[None, :] * torch.sin(theta)[:, None] * dy).reshape(-1)
        xi_x = (omega[None, :] * torch.cos(theta)[:, None] * dx).reshape(-1)
        # the image holds no frequency beyond its Nyquist along either axis: keep the points inside
        band = (xi_y.abs() <= 0.5) & (xi_x.abs() <= 0.5)
        self._inside = torch.nonzero(band)[:, 0].to(device)
        self._plan = None  # built on first use: project() does not need it
        self._xi = (xi_y[band], xi_x[band])
        self._kernel_width = kernel_width
        self._device = torch.device(device) if device is not None else torch.device("cpu")
        # nonuniform DFT over the channels, with the quadrature weight ds = R cos(gamma) dgamma
        # and the filter folded in: (K, J) complex
        phase = torch.exp(-2j * math.pi * self.s[:, None] * omega[None, :])
        matrix = phase * (self.ray_spacing[:, None] * (self._filter_1d * weights)[None, :])
        self._dft_real = matrix.real.to(self._device, dtype).contiguous()
        self._dft_imag = matrix.imag.to(self._device, dtype).contiguous()
        # angular shift of channel k by gamma_k (in views): rfft phase (V // 2 + 1, K)
        freq = torch.arange(self.num_views // 2 + 1, dtype=torch.float64)
        tau = self.gamma / (2 * math.pi / self.num_views)
        self._shift = torch.polar(torch.ones(len(freq), k, dtype=torch.float64),
                                  -2 * math.pi * freq[:, None] * tau[None, :] / self.num_views).to(self._device, complex_dtype)
        self._parallel = None
        self._lookup = None

    # ------------------------------------------------------------------------------------ tables
    @property
    def device(self) -> torch.device:
        return self._device

    def _nufft(self):
        if self._plan is None:
            from .nufft import NUFFTPlan2D

            xi_y, xi_x = self._xi
            self._plan = NUFFTPlan2D(self.shape, xi_y.to(self._device, self.dtype), xi_x.to(self._device, self.dtype),
                                     self._kernel_width)
        return self._plan

    def _projection_tables(self):
        """A parallel-beam projector over 180 degrees sampled finely enough for bilinear look-up of
        every fan ray, and the look-up grid (1, V, K, 2) in grid_sample coordinates."""
        if self._parallel is None:
            dy, dx = self.spacing
            pixel = min(dy, dx)
            half_diagonal = 0.5 * math.hypot(self.shape[0] * dy, self.shape[1] * dx)
            # angles: an arc step of at most two pixels at the slice's corner; positions: bins of a pixel
            # (or a channel), upsampled twice by the spectrum (exact), so half a pixel between samples
            views = max(90, int(math.ceil(math.pi * half_diagonal / (2 * pixel))))
            bin_spacing = min(pixel, self.bin_spacing)
            extent = max(2 * half_diagonal, 2 * float(self.s.abs().max()) + 2 * bin_spacing)
            bins = int(math.ceil(extent / bin_spacing)) + 3
            bins += (bins + 1) % 2  # odd: a bin at s = 0, the table is symmetric under s -> -s
            self._parallel = ParallelBeamGeometry(self.shape, self.spacing, views, bins, bin_spacing,
                                                  device=self._device, dtype=self.dtype)
            theta = torch.remainder(self.beta[:, None] + self.gamma[None, :], 2 * math.pi)  # (V, K)
            s = self.s[None, :].expand_as(theta).clone()
            flip = theta >= math.pi
            theta = torch.where(flip, theta - math.pi, theta)
            s = torch.where(flip, -s, s)
            row = theta / (math.pi / views)  # in [0, views): row `views` is row 0 with s -> -s
            col = s / bin_spacing + (bins - 1) / 2
            grid = torch.stack([2 * col / (bins - 1) - 1, 2 * row / views - 1], dim=-1)
            self._lookup = grid[None].to(self._device, self.dtype)
        return self._parallel, self._lookup

    # ---------------------------------------------------------------------------------- operators
    def project(self, mu: torch.Tensor) -> torch.Tensor:
        """Line integrals of ``mu`` (N, H, W) in 1/mm along every fan ray -> (N, V, K), dimensionless."""
        parallel, grid = self._projection_tables()
        sino = parallel.project(mu, upsample=2)  # (N, Vp, 2 L - 1)
        table = torch.cat([sino, sino[:, :1].flip(-1)], dim=1)[:, None]  # theta = pi is theta = 0 with s -> -s
        out = torch.nn.functional.grid_sample(table, grid.expand(mu.shape[0], -1, -1, -1), mode="bilinear",
                                              padding_mode="zeros", align_corners=True)
        return out[:, 0]

    def fbp(self, sinogram: torch.Tensor, method: str = "fourier") -> torch.Tensor:
        """Fan-beam FBP of (N, V, K) line integrals -> (N, H, W) attenuation in 1/mm (module docstring)."""
        if method == "fourier":
            return self._fbp_fourier(sinogram)
        if method == "direct":
            return self._fbp_direct(sinogram)
        raise ValueError(f"method must be 'fourier' or 'direct', got {method!r}.")

    def _fbp_fourier(self, sinogram: torch.Tensor) -> torch.Tensor:
        n, v, k = sinogram.shape
        if (v, k) != (self.num_views, self.num_bins):
            raise ValueError(f"sinogram must be (N, {self.num_views}, {self.num_bins}), got {tuple(sinogram.shape)}.")
        # channel k's views, shifted in angle by gamma_k: the parallel-beam projection at theta_m
        rebinned = torch.fft.irfft(torch.fft.rfft(sinogram.to(self.dtype), dim=1) * self._shift, n=v, dim=1)
        flat = rebinned.reshape(n * v, k)
        spectrum = torch.complex(flat @ self._dft_real, flat @ self._dft_imag)  # (N V, J): weighted, filtered
        values = spectrum.reshape(n, -1).index_select(1, self._inside).to(self.complex_dtype)
        plan = self._nufft()
        # the adjoint spreads every sample over J^2 grid cells: a few slices at a time bound the memory
        chunk = max(1, _SPREAD_ELEMENTS // (values.shape[1] * plan.width**2))
        image = torch.cat([plan.adjoint(values[i: i + chunk]).real for i in range(0, n, chunk)])
        return image * (math.pi / v) * self._d_omega

    def _fbp_direct(self, sinogram: torch.Tensor, upsample: int = 4) -> torch.Tensor:
        n, v, k = sinogram.shape
        dev, dt = sinogram.device, torch.float64 if self.dtype == torch.float64 else torch.float32
        r = self.source_isocentre
        arc = self.detector_shape == "arc"
        # detector sampling: gamma (arc) or the virtual detector through the isocentre (flat), uniform
        step = self.channel_pitch / self.source_detector if arc else self.channel_pitch * r / self.source_detector
        first = float(self.gamma[0]) if arc else float(torch.tan(self.gamma[0])) * r
        pre = (r * torch.cos(self.gamma) if arc else torch.cos(self.gamma)).to(dev, dt)
        lp = _fast_fft_size(2 * k)
        offsets = torch.fft.fftfreq(lp, d=1.0 / lp, dtype=torch.float64)  # integer lags
        kernel = torch.fft.irfft(_ramp_filter(lp, step, self.filter_name)[: lp // 2 + 1], n=lp) / step  # h(n step)
        if arc:  # h(L sin g) = (g / (L sin g))^2 h(g): the equiangular kernel
            g = offsets * step
            kernel = kernel * torch.where(g == 0, torch.ones_like(g), g / torch.sin(g)) ** 2
        kernel = 0.5 * kernel * step  # 1/2: every line is measured twice over 360 degrees; step: the sum's dx
        filtered = torch.fft.irfft(torch.fft.rfft(sinogram.to(dt) * pre, n=lp, dim=-1)
                                   * torch.fft.rfft(kernel.to(dev, dt), dim=-1), n=lp, dim=-1)
        # band-limited upsampling of the filtered views (linear interpolation of those is then ~exact)
        up = torch.fft.irfft(torch.fft.rfft(filtered, dim=-1), n=lp * upsample, dim=-1) * upsample
        up = torch.cat([up[..., : k * upsample], torch.zeros_like(up[..., :2])], dim=-1)  # zeros past the edge
        h, w = self.shape
        dy, dx = self.spacing
        y = ((torch.arange(h, device=dev, dtype=dt) - (h - 1) / 2) * dy)[:, None]
        x = ((torch.arange(w, device=dev, dtype=dt) - (w - 1) / 2) * dx)[None, :]
        beta = self.beta.to(dev, dt)
        image = torch.zeros(n, h * w, device=dev, dtype=dt)
        chunk = max(1, _BP_ELEMENTS // max(1, n * h * w))
        last = k * upsample - 1
        for start in range(0, v, chunk):
            b = beta[start: start + chunk, None, None]
            cos, sin = torch.cos(b), torch.sin(b)
            a = x * cos + y * sin
            u_dist = r + x * sin - y * cos
            if arc:
                coord, weight = torch.atan2(a, u_dist), 1.0 / (a * a + u_dist * u_dist)
            else:
                coord, weight = r * a / u_dist, (r / u_dist) ** 2
            pos = ((coord - first) / step * upsample).reshape(b.shape[0], -1)
            inside = (pos >= 0) & (pos <= last)
            pos = pos.clamp(0, last)
            lo = pos.floor()
            frac = pos - lo
            lo = lo.long()
            rows = up[:, start: start + chunk]  # (N, c, K up)
            index = lo[None].expand(n, -1, -1)
            left = torch.gather(rows, 2, index)
            right = torch.gather(rows, 2, (index + 1).clamp_max(rows.shape[-1] - 1))
            value = (left + frac * (right - left)) * (weight.reshape(b.shape[0], -1) * inside)
            image += value.sum(1)
        return (image * (2 * math.pi / v)).reshape(n, h, w).to(self.dtype)

    # ------------------------------------------------------------------------------ noise model
    def view_angles(self, num_angles: int | None = None) -> torch.Tensor:
        """``num_angles`` (default: the geometry's views) source angles evenly spaced over [0, 2 pi), float64."""
        num_angles = self.num_views if num_angles is None else int(num_angles)
        return torch.arange(num_angles, dtype=torch.float64) * 2 * math.pi / num_angles

    def rays_through(self, points: torch.Tensor, beta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Fan angle ``gamma`` (P, A) of the ray through each point (P, 2) ((y, x) mm) at source angles
        ``beta`` (A,), and the parallel-beam angle ``theta = beta + gamma`` of that ray, float64."""
        points = torch.as_tensor(points, dtype=torch.float64).reshape(-1, 2).cpu()
        beta = torch.as_tensor(beta, dtype=torch.float64).cpu()
        y, x = points[:, :1], points[:, 1:]
        a = x * torch.cos(beta) + y * torch.sin(beta)
        u_dist = self.source_isocentre + x * torch.sin(beta) - y * torch.cos(beta)
        gamma = torch.atan2(a, u_dist)
        return gamma, beta + gamma

    def ray_channels(self, points: torch.Tensor, num_angles: int = 16) -> torch.Tensor:
        """Fractional channel index (P, A) of the rays through ``points`` at ``num_angles`` source angles."""
        return self.channel_position(self.rays_through(points, self.view_angles(num_angles))[0])

    def channel_position(self, gamma: torch.Tensor) -> torch.Tensor:
        """Fractional channel index of fan angle(s) ``gamma``."""
        gamma = torch.as_tensor(gamma, dtype=torch.float64)
        if self.detector_shape == "arc":
            index = gamma * self.source_detector / self.channel_pitch
        else:
            index = torch.tan(gamma) * self.source_detector / self.channel_pitch
        return index + (self.num_bins - 1) / 2 - self.detector_offset

    def ray_density(self, gamma: torch.Tensor) -> torch.Tensor:
        """Isocentre spacing ``R cos(gamma) dgamma/dk`` (mm) of the channels at fan angle(s) ``gamma``."""
        gamma = torch.as_tensor(gamma, dtype=torch.float64)
        pitch, d, r = self.channel_pitch, self.source_detector, self.source_isocentre
        dgamma = torch.full_like(gamma, pitch / d) if self.detector_shape == "arc" else pitch * torch.cos(gamma) ** 2 / d
        return r * torch.cos(gamma) * dgamma

    def line_integrals_through(self, mu: torch.Tensor, points: torch.Tensor, num_angles: int = 16,
                               max_samples: int = 1024) -> torch.Tensor:
        """Line integrals (N, P, A) along the fan rays through ``points`` (P, 2) at ``num_angles``
        source angles (:meth:`view_angles`)."""
        gamma, theta = self.rays_through(points, self.view_angles(num_angles))
        return sample_line_integrals(mu, self.spacing, points, theta, max_samples)

    def noise_gain(self, points: torch.Tensor, num_angles: int = 16, kernel: torch.Tensor | None = None) -> torch.Tensor:
        """FBP noise gain (P, A) in (1/mm)^2 of the rays through ``points`` at ``num_angles`` source angles.

        The Fourier fan-beam FBP weights a ray by ``pi / V`` (a line is measured twice in 360 degrees)
        times its quadrature weight ``w = R cos(gamma) dgamma``; rays near a pixel are locally parallel with
        spacing w, so white sinogram noise of variance var on them gives the pixel
        ``(pi^2 / V) w(gamma) var * integral of H(omega)^2 |K|^2`` over the frequencies of the filter and the
        image band along theta = beta + gamma: :func:`~.ct_geometry.directional_noise_gain` with the
        bin width replaced by the local ray spacing."""
        gamma, theta = self.rays_through(points, self.view_angles(num_angles))
        return (math.pi**2 / self.num_views) * self.ray_density(gamma) * self.filter_power(theta, kernel)

    def filter_power(self, theta: torch.Tensor, kernel: torch.Tensor | None = None) -> torch.Tensor:
        """``sum_j d_omega c_j H_j^2 |K|^2`` over the filter's frequencies inside the image band, per angle
        ``theta`` (any shape), float64."""
        theta = torch.as_tensor(theta, dtype=torch.float64).cpu()
        fy = self._omega * torch.sin(theta)[..., None] * self.spacing[0]
        fx = self._omega * torch.cos(theta)[..., None] * self.spacing[1]
        weight = self._filter_1d**2 * self._weights * ((fy.abs() <= 0.5) & (fx.abs() <= 0.5))
        if kernel is not None:
            weight = weight * kernel_response(fy, fx, kernel)
        return weight.sum(-1) * self._d_omega


@lru_cache(maxsize=8)
def fan_beam_geometry(
    shape: tuple[int, int],
    spacing: tuple[float, float],
    num_views: int,
    num_channels: int,
    source_isocentre: float,
    source_detector: float,
    channel_pitch: float,
    detector_shape: str,
    detector_offset: float,
    filter_name: str,
    device: str,
) -> FanBeamGeometry:
    """A cached :class:`FanBeamGeometry` (``fan_beam_geometry.cache_clear()`` drops the tables)."""
    return FanBeamGeometry(shape, spacing, num_views, num_channels, source_isocentre, source_detector, channel_pitch,
                           detector_shape, detector_offset, filter_name, device=device)
