"""Calibrated quality time: a RelativeFlow network fitted to the objective's own training pairs,
run by the ``auto`` schedule, meets its target noise std on held-out data.

The network is not an oracle: it is the least-squares linear fit of the objective's targets
(closed form, per step size on a grid), so it moves at whatever speed the objective teaches.
"""

import math

import pytest
import torch

from monai_flow.flows import RelativeFlow
from monai_flow.inferers import RelativeFlowInferer

SIZE, REF_STD = 16, 0.2
GRID = torch.linspace(0.02, 1.0, 50)


def gaussian_operator(x, level, generator=None):
    """CoT-scaled additive Gaussian degradation of references whose noise std is REF_STD."""
    std = REF_STD * torch.expm1(2 * torch.as_tensor(level)).sqrt().reshape(-1, 1, 1, 1)
    return x + std * torch.randn(x.shape, generator=generator)


def features(x):
    """The two directions a linear denoiser of flat images needs: deviation from the mean, and the mean."""
    mean = x.mean(dim=(-2, -1), keepdim=True)
    return x - mean, mean.expand_as(x)


class FittedLinearNetwork(torch.nn.Module):
    """``N(x, dt) = a(dt) (x - mean x) + b(dt) mean x``, a and b fitted by least squares per grid dt."""

    def __init__(self, objective, n=128, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        coef = []
        for dt in GRID:
            signal = torch.randn(n, 1, 1, 1, generator=g).expand(n, 1, SIZE, SIZE)
            reference = signal + REF_STD * torch.randn(n, 1, SIZE, SIZE, generator=g)
            y, u = objective.training_pair(reference, dt.expand(n), g)
            design = torch.stack([f.reshape(-1) for f in features(y)], dim=1).double()
            coef.append(torch.linalg.lstsq(design, u.reshape(-1, 1).double()).solution[:, 0])
        self.coef = torch.stack(coef).float()  # (len(GRID), 2)

    def forward(self, x, dt):
        dt = torch.as_tensor(dt).expand(x.shape[0])
        pos = ((dt - GRID[0]) / (GRID[1] - GRID[0])).clamp(0, len(GRID) - 1.001)
        i, w = pos.floor().long(), (pos - pos.floor())[:, None]
        a, b = ((1 - w) * self.coef[i] + w * self.coef[i + 1]).unbind(1)
        dev, mean = features(x)
        return a.reshape(-1, 1, 1, 1) * dev + b.reshape(-1, 1, 1, 1) * mean


def noise_std(x):
    dev, _ = features(x)
    return dev.flatten(1).std(dim=1) * math.sqrt(SIZE * SIZE / (SIZE * SIZE - 1))


def held_out(levels, seed=1, n=64):
    g = torch.Generator().manual_seed(seed)
    signal = torch.randn(len(levels) * n, 1, 1, 1, generator=g).expand(-1, 1, SIZE, SIZE)
    stds = torch.tensor(levels).repeat_interleave(n).reshape(-1, 1, 1, 1)
    return signal, signal + stds * torch.randn(signal.shape, generator=g)


@pytest.fixture(scope="module")
def fitted():
    """Networks fitted to the calibrated objective and to the paper's correspondence."""
    return {q: FittedLinearNetwork(RelativeFlow(gaussian_operator, quality_time=q)) for q in ("calibrated", "paper")}


@pytest.mark.parametrize("target", [0.03, 0.08])
def test_auto_schedule_meets_its_target_std_with_a_fitted_network(target, fitted):
    net = fitted["calibrated"]
    levels = [0.12, 0.25, 0.5]
    clean, noisy = held_out(levels)
    inferer = RelativeFlowInferer("auto", noise_estimator=noise_std, target_std=target, max_dt=0.4, min_dt=0.05)
    # the removable noise left: the residual's deviation from its per-image mean (a flat image's
    # mean noise cannot be told from its signal, by any denoiser)
    residual = noise_std(inferer(noisy, net) - clean).reshape(len(levels), -1)
    for level, r in zip(levels, residual):
        assert r.mean().item() == pytest.approx(target, rel=0.10), (level, r.mean().item())


def test_the_paper_correspondence_removes_twice_the_quality_time(fitted):
    """Degrading by dt (the paper) teaches steps that divide the noise by about e^{2 dt}."""
    net, calibrated = fitted["paper"], fitted["calibrated"]
    clean, noisy = held_out([0.25])
    before = noise_std(noisy - clean).mean()
    for dt in (0.1, 0.3):
        paper_ratio = noise_std(RelativeFlowInferer((dt,))(noisy, net) - clean).mean() / before
        assert paper_ratio.item() == pytest.approx(math.exp(-2 * dt), rel=0.03)
        ratio = noise_std(RelativeFlowInferer((dt,))(noisy, calibrated) - clean).mean() / before
        assert ratio.item() == pytest.approx(math.exp(-dt), rel=0.03)


def test_quality_time_is_validated():
    with pytest.raises(ValueError, match="quality_time"):
        RelativeFlow(gaussian_operator, quality_time="fast")
