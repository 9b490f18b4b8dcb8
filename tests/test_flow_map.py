"""Flow maps: the MeanFlow identity on a closed-form Gaussian flow map, training, the denoiser knob."""


import pytest
import torch

from monai_flow.flows import FlowMap, meanflow_target
from monai_flow.inferers import FlowMapDenoiser

M, C = 0.5, 2.0  # data x ~ N(M, C^2) per coordinate


def sigma_t(t):
    return torch.sqrt(t**2 * C**2 + (1 - t) ** 2)


def flow(z, s, t):
    """Closed-form flow map X_{s,t}(z) = t m + (sigma_t / sigma_s)(z - s m) (DESIGN.md 4.4)."""
    return t * M + sigma_t(t) / sigma_t(s) * (z - s * M)


def velocity(z, s):
    return M + (s * C**2 - (1 - s)) / sigma_t(s) ** 2 * (z - s * M)


class ExactFlowMap(torch.nn.Module):
    """u(z, s, t) of the Gaussian flow, (B, C, *spatial) with per-sample times (B,)."""

    def forward(self, z, s, target_time):
        s_, t_ = (v.reshape(-1, *([1] * (z.ndim - 1))) for v in (s, target_time))
        gap = t_ - s_
        safe = torch.where(gap.abs() > 1e-6, gap, torch.ones_like(gap))
        return torch.where(gap.abs() > 1e-6, (flow(z, s_, t_) - z) / safe, velocity(z, s_))


def test_exact_flow_map_satisfies_the_meanflow_identity():
    torch.manual_seed(0)
    z = torch.randn(64, 1, 3, dtype=torch.float64) * 2
    a, b = torch.rand(64, dtype=torch.float64), torch.rand(64, dtype=torch.float64)
    s, t = torch.minimum(a, b) * 0.98, torch.maximum(a, b)
    s_ = s.reshape(-1, 1, 1)
    net = ExactFlowMap()
    u, target = meanflow_target(lambda z_, s__, t__: net(z_, s__, t__), z, s, t, velocity(z, s_))
    assert torch.allclose(u, target, atol=1e-9)
    # a wrong flow map (velocity off by 10%) violates it
    u_bad, target_bad = meanflow_target(lambda z_, s__, t__: 1.1 * net(z_, s__, t__), z, s, t, velocity(z, s_))
    assert (u_bad - target_bad).abs().max() > 1e-2


def test_denoiser_ends_are_mmse_and_ode_endpoint():
    torch.manual_seed(1)
    x = M + C * torch.randn(4096, 1, 1, dtype=torch.float64)
    sigma = 0.8
    y = x + sigma * torch.randn_like(x)
    net = ExactFlowMap()
    mmse = M + C**2 / (C**2 + sigma**2) * (y - M)
    assert torch.allclose(FlowMapDenoiser(lookahead=0.0, sigma=sigma)(y, net), mmse, atol=1e-9)
    s = torch.tensor(1 / (1 + sigma), dtype=torch.float64)
    endpoint = flow(s * y, s, torch.tensor(1.0, dtype=torch.float64))
    assert torch.allclose(FlowMapDenoiser(lookahead=1.0, sigma=sigma)(y, net), endpoint, atol=1e-9)
    # the perceptual end has the data variance, the MMSE end less; variance rises with lookahead
    variances = [FlowMapDenoiser(lookahead=k, sigma=sigma)(y, net).var().item() for k in (0, 0.25, 0.5, 0.75, 1)]
    assert all(b > a for a, b in zip(variances, variances[1:]))
    assert abs(variances[-1] / C**2 - 1) < 0.06


class TinyMLP(torch.nn.Module):
    def __init__(self, dim=2, width=64):
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(dim + 2, width), torch.nn.SiLU(), torch.nn.Linear(width, width), torch.nn.SiLU(), torch.nn.Linear(width, dim)
        )

    def forward(self, z, s, target_time):
        b = z.shape[0]
        feats = torch.cat([z.reshape(b, -1), s.reshape(b, 1).to(z), target_time.reshape(b, 1).to(z)], 1)
        return self.net(feats).reshape(z.shape)


def test_trained_flow_map_approaches_the_closed_form(single_thread):
    torch.manual_seed(0)
    net = TinyMLP()
    objective = FlowMap(diagonal_fraction=0.25, seed=0)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, 800)
    for _ in range(800):
        x = M + C * torch.randn(512, 2, 1)
        loss = objective(net, {"image": x})
        opt.zero_grad()
        loss.backward()
        opt.step()
        schedule.step()
    exact = ExactFlowMap()
    with torch.no_grad():
        z = torch.randn(512, 2, 1) * 1.5
        a, b = torch.rand(512), torch.rand(512)
        s, t = torch.minimum(a, b) * 0.9, torch.maximum(a, b)
        err = (net(z, s, t) - exact(z.double(), s.double(), t.double()).float()).pow(2).mean().sqrt()
        scale = exact(z.double(), s.double(), t.double()).float().pow(2).mean().sqrt()
        assert err / scale < 0.25  # untrained off the diagonal (flow matching only): ~0.35
        # the knob: lookahead 0 is close to the MMSE denoiser
        x = M + C * torch.randn(2048, 2, 1)
        y = x + 0.8 * torch.randn_like(x)
        out0 = FlowMapDenoiser(0.0, sigma=0.8)(y, net)
        mmse = M + C**2 / (C**2 + 0.64) * (y - M)
        assert (out0 - mmse).pow(2).mean() < 0.05 * (y - mmse).pow(2).mean()
        v = [FlowMapDenoiser(k, sigma=0.8)(y, net).var().item() for k in (0.0, 0.5, 1.0)]
        assert v[0] < v[1] < v[2]
        one_step = FlowMapDenoiser.generate(net, (4096, 2, 1), num_steps=1, seed=0)
        assert abs(one_step.mean().item() - M) < 0.15 and abs(one_step.std().item() / C - 1) < 0.15


def test_flow_map_loss_is_deterministic_and_validates():
    net = TinyMLP()
    x = torch.randn(16, 2, 1)
    assert torch.equal(FlowMap(seed=3)(net, x), FlowMap(seed=3)(net, x))
    with pytest.raises(ValueError, match="diagonal_fraction"):
        FlowMap(diagonal_fraction=1.5)
    with pytest.raises(ValueError, match="lookahead"):
        FlowMapDenoiser(lookahead=2.0)
    with pytest.raises(ValueError, match="sigma"):
        FlowMapDenoiser()(x, net)
