"""Unit tests of monai_flow.flows: paths, time samplers, OT coupling, CFM and RelativeFlow losses."""

import itertools
import math

import pytest
import torch

from monai_flow.flows import (
    CondOTProbPath,
    ConditionalFlowMatching,
    CumulativeVelocityFlow,
    DtCurriculum,
    FlowObjective,
    LogitNormalTimeSampler,
    RelativeFlow,
    UniformTimeSampler,
    ot_permutation,
    relative_euler_step,
    relative_velocity_target,
)


class AdditiveGaussian:
    """CoT-consistent test operator: y = x + s_ref * sqrt(e^{2 dt} - 1) * n (noise std times e^dt)."""

    def __init__(self, s_ref=0.1):
        self.s_ref = s_ref
        self.calls = []

    def __call__(self, x, dt, generator=None):
        self.calls.append((dt.clone(), generator))
        dt = torch.as_tensor(dt, dtype=x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
        n = torch.randn(x.shape, generator=generator, dtype=x.dtype)
        return x + self.s_ref * torch.sqrt(torch.expm1(2 * dt)) * n


class Recorder(torch.nn.Module):
    """Returns zeros and records its inputs."""

    def __init__(self, null_class=None):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))
        if null_class is not None:
            self.null_class = null_class
        self.calls = []

    def forward(self, x, t, **kwargs):
        self.calls.append((x.clone(), t.clone(), kwargs))
        return x * self.w


@pytest.mark.parametrize("shape", [(4, 1, 6, 6), (3, 2, 4, 4, 4)])
def test_path_endpoints_and_target(shape):
    g = torch.Generator().manual_seed(0)
    x0, x1 = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
    b = shape[0]
    path = CondOTProbPath(0.0)
    xt0, u = path.sample(x0, x1, torch.zeros(b))
    xt1, _ = path.sample(x0, x1, torch.ones(b))
    torch.testing.assert_close(xt0, x0)
    torch.testing.assert_close(xt1, x1)
    torch.testing.assert_close(u, x1 - x0)

    s = 0.1
    path = CondOTProbPath(s)
    t = torch.rand(b, generator=g)
    tb = t.reshape(-1, *([1] * (len(shape) - 1)))
    xt, u = path.sample(x0, x1, t)
    torch.testing.assert_close(xt, (1 - (1 - s) * tb) * x0 + tb * x1)
    torch.testing.assert_close(path.sample(x0, x1, torch.ones(b))[0], s * x0 + x1)
    # target is the time derivative of the path (central finite difference, double precision)
    h = 1e-4
    xp, _ = path.sample(x0.double(), x1.double(), t.double() + h)
    xm, _ = path.sample(x0.double(), x1.double(), t.double() - h)
    torch.testing.assert_close(((xp - xm) / (2 * h)).float(), u, atol=1e-5, rtol=1e-5)


def test_time_samplers():
    g = torch.Generator().manual_seed(1)
    t = UniformTimeSampler()(20000, generator=g)
    assert t.shape == (20000,) and t.min() >= 0 and t.max() < 1
    assert abs(t.mean().item() - 0.5) < 0.01
    t = LogitNormalTimeSampler(loc=0.8, scale=0.5)(20000, generator=g)
    assert t.min() > 0 and t.max() < 1
    assert abs(t.median().item() - 1 / (1 + math.exp(-0.8))) < 0.01
    logit = torch.log(t / (1 - t))
    assert abs(logit.std().item() - 0.5) < 0.02
    cfm = ConditionalFlowMatching(time_sampling="logit_normal", time_loc=-1.0, time_scale=1.0)
    t = cfm.sample_time(20000, generator=g)
    assert abs(t.median().item() - 1 / (1 + math.exp(1.0))) < 0.01


def _cost(x0, x1, perm):
    return ((x0[perm] - x1) ** 2).flatten(1).sum(1).sum().item()


def test_ot_permutation_exact():
    g = torch.Generator().manual_seed(2)
    x0, x1 = torch.randn(6, 1, 3, 3, generator=g), torch.randn(6, 1, 3, 3, generator=g) + 0.5
    perm = ot_permutation(x0, x1)
    assert sorted(perm.tolist()) == list(range(6))
    best = min(_cost(x0, x1, torch.tensor(p)) for p in itertools.permutations(range(6)))
    assert _cost(x0, x1, perm) == pytest.approx(best, rel=1e-6)
    assert _cost(x0, x1, perm) <= _cost(x0, x1, torch.arange(6))

    x0, x1 = torch.randn(32, 2, 4, 4, generator=g), torch.randn(32, 2, 4, 4, generator=g)
    perm = ot_permutation(x0, x1)
    assert sorted(perm.tolist()) == list(range(32))
    assert _cost(x0, x1, perm) < _cost(x0, x1, torch.arange(32))

    groups = torch.tensor([0, 1] * 16)
    perm = ot_permutation(x0, x1, groups=groups)
    assert sorted(perm.tolist()) == list(range(32))
    assert torch.equal(groups[perm], groups)  # pairs never cross groups
    cfm = ConditionalFlowMatching(ot_coupling=True)
    torch.testing.assert_close(cfm.couple(x0, x1), x0[ot_permutation(x0, x1)])


def test_cfm_loss_exact_inputs_and_value():
    x1 = torch.randn(5, 1, 4, 4, generator=torch.Generator().manual_seed(3))
    labels = torch.tensor([0, 1, 2, 1, 0])
    net = Recorder()
    cfm = ConditionalFlowMatching(sigma_min=0.05, seed=7)
    loss = cfm.loss(net, {"image": x1, "label": labels})
    # replay the same draws: noise first, then times
    g = torch.Generator().manual_seed(7)
    x0 = torch.randn(x1.shape, generator=g)
    t = torch.rand(5, generator=g)
    xt, u = CondOTProbPath(0.05).sample(x0, x1, t)
    seen_x, seen_t, kwargs = net.calls[0]
    torch.testing.assert_close(seen_x, xt)
    torch.testing.assert_close(seen_t, t)
    assert seen_t.shape == (5,)
    assert torch.equal(kwargs["class_labels"], labels) and set(kwargs) == {"class_labels"}
    torch.testing.assert_close(loss, (u**2).mean())
    loss.backward()  # differentiable through the network


def test_cfm_determinism_and_generator():
    x1 = torch.randn(4, 1, 4, 4)
    net = torch.nn.Conv2d(1, 1, 3, padding=1)
    f = lambda x, t: net(x) * t.reshape(-1, 1, 1, 1)  # noqa: E731
    a = ConditionalFlowMatching(seed=11).loss(f, x1)
    b = ConditionalFlowMatching(seed=11).loss(f, x1)
    c = ConditionalFlowMatching(seed=12).loss(f, x1)
    assert torch.equal(a, b) and not torch.equal(a, c)
    cfm = ConditionalFlowMatching()
    d = cfm.loss(f, x1, generator=torch.Generator().manual_seed(11))
    assert torch.equal(a, d)
    cfm.set_random_state(11)
    assert torch.equal(cfm.loss(f, x1), a)


def test_cfm_conditioning_dropout():
    cfm = ConditionalFlowMatching(p_uncond=0.3)
    g = torch.Generator().manual_seed(4)
    labels = torch.randint(0, 3, (20000,), generator=g)
    mask = torch.rand(20000, 1, 2, 2, generator=g) + 0.1
    new_labels, new_mask, dropped = cfm.drop_conditions(labels, mask, null_class=3, generator=g)
    assert abs(dropped.float().mean().item() - 0.3) < 0.015
    assert torch.all(new_labels[dropped] == 3) and torch.equal(new_labels[~dropped], labels[~dropped])
    assert torch.all(new_mask[dropped] == 0) and torch.equal(new_mask[~dropped], mask[~dropped])

    # inside the loss: the null class comes from the network, labels and masks drop together
    net = Recorder(null_class=3)
    cfm = ConditionalFlowMatching(p_uncond=0.5, seed=0)
    x1 = torch.randn(64, 1, 2, 2)
    lab = torch.randint(0, 3, (64,), generator=g)
    cfm.loss(net, {"image": x1, "label": lab.reshape(64, 1), "mask": torch.ones(64, 1, 2, 2)})
    kw = net.calls[0][2]
    dropped = kw["class_labels"] == 3
    assert 10 < dropped.sum() < 54
    assert torch.all(kw["mask"][dropped] == 0) and torch.all(kw["mask"][~dropped] == 1)
    with pytest.raises(ValueError, match="null_class"):
        cfm.loss(Recorder(), {"image": x1, "label": lab})
    # an explicit null_class wins; p_uncond=0 never drops
    net = Recorder()
    ConditionalFlowMatching(p_uncond=1.0, null_class=9).loss(net, {"image": x1, "label": lab})
    assert torch.all(net.calls[0][2]["class_labels"] == 9)
    net = Recorder(null_class=3)
    ConditionalFlowMatching(p_uncond=0.0).loss(net, {"image": x1, "label": lab})
    assert torch.equal(net.calls[0][2]["class_labels"], lab)


def test_cfm_bad_params():
    with pytest.raises(ValueError, match="sigma_min"):
        ConditionalFlowMatching(sigma_min=1.0)
    with pytest.raises(ValueError, match="p_uncond"):
        ConditionalFlowMatching(p_uncond=1.5)
    with pytest.raises(ValueError, match="time_sampling"):
        ConditionalFlowMatching(time_sampling="beta")
    with pytest.raises(ValueError, match="scale"):
        ConditionalFlowMatching(time_sampling="logit_normal", time_scale=0.0)
    cfm = ConditionalFlowMatching()
    with pytest.raises(ValueError, match="image"):
        cfm.loss(Recorder(), {"img": torch.zeros(2, 1, 4, 4)})
    with pytest.raises(ValueError, match="label"):
        cfm.loss(Recorder(), {"image": torch.zeros(2, 1, 4, 4), "label": torch.tensor([0, 1, 1])})
    with pytest.raises(ValueError, match="shape"):
        cfm.loss(lambda x, t: x[:, :, :2], torch.zeros(2, 1, 4, 4))
    with pytest.raises(ValueError, match="shape"):
        CondOTProbPath().sample(torch.zeros(2, 1, 4), torch.zeros(2, 1, 4), torch.zeros(3))
    assert isinstance(cfm, FlowObjective)


def _fit_linear(y, u):
    """Least-squares fit u ~ alpha y + beta; returns alpha, beta and the standard errors of alpha and of the
    fitted value at the mean of y (residual std / (std(y) sqrt(n)) and residual std / sqrt(n))."""
    design = torch.stack([y, torch.ones_like(y)], dim=1)
    coef = torch.linalg.lstsq(design, u[:, None]).solution[:, 0]
    residual = (u - design @ coef).std()
    n = y.numel()
    return float(coef[0]), float(coef[1]), float(residual / (y.std() * math.sqrt(n))), float(residual / math.sqrt(n))


@pytest.mark.parametrize("dt", [0.1, 0.3, 0.7])
def test_relative_velocity_optimum_and_euler_step_are_posterior_means(dt):
    """What L2 regression on the RelativeFlow target learns, in closed form (DESIGN.md 4.2, "Caution").

    Time correspondence checked (RelativeFlow.loss today): a training pair at step label dt is the reference x
    and y = D_dt(x), one CoT degradation step (noise std times e^dt; here additive Gaussian,
    y = x + s_ref sqrt(e^{2 dt} - 1) n, the AdditiveGaussian operator above), with the target
    ``relative_velocity_target(x, y, dt)``; inference applies ``relative_euler_step(y, v, dt)`` with the same
    dt. If the objective's labelling changes (e.g. another dt in the network's input), this test still states
    what these two public pieces do with a pair made at dt.

    Data: x* ~ N(m, c^2) per pixel, x = x* + s_ref n0. Everything is Gaussian, so the optimum E[u | y] is
    linear in y; fitted by ``torch.linalg.lstsq`` it must be N*(y) = e^{-dt} (1 + e^{-dt}) (E[x*|y] - y) with
    E[x*|y] = m + c^2 / (c^2 + s_ref^2 e^{2 dt}) (y - m) (about twice the CoT velocity E[x*|y] - y for small
    dt), and one Euler step with it must return E[x | y] = m + (c^2 + s_ref^2) / (c^2 + s_ref^2 e^{2 dt}) (y - m).
    With a known clean signal (c = 0: the noise fully removable) the step divides the noise std by e^{2 dt},
    not e^{dt} as the CoT path would. A wrong target scale (e.g. (x - y) / dt) or a wrong step
    (y + dt v) fails it by several percent at dt = 0.1, far beyond the fit's standard errors."""
    g = torch.Generator().manual_seed(12)
    n, m, s_ref = 200_000, 0.5, 0.1
    k = math.exp(-dt) * (1 + math.exp(-dt))
    dt_b = torch.tensor([dt], dtype=torch.float64)
    for c in (0.2, 0.0):
        x_star = m + c * torch.randn(1, 1, n, generator=g, dtype=torch.float64)
        x = x_star + s_ref * torch.randn(1, 1, n, generator=g, dtype=torch.float64)
        y = AdditiveGaussian(s_ref)(x, dt_b, generator=g)
        u = relative_velocity_target(x, y, dt_b)
        alpha, beta, se_alpha, se_mean = _fit_linear(y.flatten(), u.flatten())
        var_y = c**2 + s_ref**2 * math.exp(2 * dt)
        alpha_star = k * (c**2 / var_y - 1)  # N*(y) = alpha* (y - m): zero at y = m
        assert abs(alpha - alpha_star) < 5 * se_alpha, (alpha, alpha_star, se_alpha)
        assert abs(alpha * m + beta) < 5 * se_mean, (alpha * m + beta, se_mean)
        step = relative_euler_step(y, alpha * y + beta, dt_b)
        posterior = m + (c**2 + s_ref**2) / var_y * (y - m)  # E[x | y]
        assert float((step - posterior).abs().max()) < 5 * (math.exp(dt) - 1) * (se_alpha * float((y - m).abs().max()) + se_mean)
        if c == 0.0:  # known signal: std e^dt s_ref before the step, e^{-dt} s_ref after
            ratio = float((step - m).std() / (y - m).std())
            assert ratio == pytest.approx(math.exp(-2 * dt), rel=0.01)


def test_additive_gaussian_cot_scaling():
    x = torch.zeros(1, 1, 200, 200)
    s_ref, dt = 0.1, 0.3
    n_ref = s_ref * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    y = AdditiveGaussian(s_ref)(x + n_ref, torch.tensor([dt]), generator=torch.Generator().manual_seed(1))
    assert y.std().item() == pytest.approx(s_ref * math.exp(dt), rel=0.02)


def test_relative_flow_loss_exact():
    x = torch.rand(6, 1, 4, 4, generator=torch.Generator().manual_seed(6))
    op = AdditiveGaussian(0.1)
    cur = DtCurriculum(start=(0.1, 0.3), factor=1.0)
    rf = RelativeFlow(op, curriculum=cur, seed=3)
    net = Recorder()
    loss = rf.loss(net, {"image": x})
    g = torch.Generator().manual_seed(3)
    dt = 0.1 + 0.2 * torch.rand(6, generator=g)
    y = AdditiveGaussian(0.1)(x, dt / 2, generator=g)  # calibrated quality time: a step of dt trains on dt / 2
    seen_y, seen_dt, kwargs = net.calls[0]
    assert seen_dt.shape == (6,) and kwargs == {}
    torch.testing.assert_close(seen_dt, dt)
    torch.testing.assert_close(seen_y, y)
    assert op.calls[0][1] is not None  # the seeded generator reaches the operator
    torch.testing.assert_close(loss, (relative_velocity_target(x, y, dt) ** 2).mean())
    # deterministic under a seed, different without
    assert torch.equal(RelativeFlow(op, cur, seed=3).loss(net, x), loss)
    assert not torch.equal(RelativeFlow(op, cur, seed=4).loss(net, x), loss)
    with pytest.raises(ValueError, match="degradation"):
        RelativeFlow(None)
    with pytest.raises(ValueError, match="shape"):
        RelativeFlow(lambda x, dt, generator=None: x[..., :2]).loss(net, x)


def test_curriculum_widening_caps_and_sampling():
    cur = DtCurriculum()
    assert cur.range == (0.2, 0.2)
    cur.step()
    assert cur.dt_min == pytest.approx(0.18) and cur.dt_max == pytest.approx(0.2 / 0.9)
    for _ in range(4):
        cur.step()
    assert cur.dt_min == pytest.approx(0.2 * 0.9**5) and cur.dt_max == pytest.approx(0.2 / 0.9**5)
    dt = cur.sample(1000, generator=torch.Generator().manual_seed(0))
    assert dt.shape == (1000,) and dt.min() >= cur.dt_min and dt.max() <= cur.dt_max
    assert dt.max() - dt.min() > 0.9 * (cur.dt_max - cur.dt_min)
    cur = DtCurriculum(start=(0.2, 0.3), factor=0.5, dt_min_floor=0.05, dt_max_cap=0.8)
    for _ in range(10):
        cur.step()
    assert cur.range == (0.05, 0.8)


def test_curriculum_state_round_trip_and_bad_params():
    cur = DtCurriculum(factor=0.8)
    for _ in range(3):
        cur.step()
    state = cur.state_dict()
    assert state["epoch"] == 3 and state["dt_min"] == pytest.approx(0.2 * 0.8**3)
    other = DtCurriculum(factor=0.8)
    other.load_state_dict(state)
    assert other.range == cur.range and other.epoch == 3
    other.load_state_dict({"epoch": torch.tensor(2)})
    assert other.epoch == 2
    rf = RelativeFlow(AdditiveGaussian(), curriculum=DtCurriculum(factor=0.8))
    rf.load_state_dict(RelativeFlow(AdditiveGaussian(), curriculum=cur).state_dict())
    assert rf.curriculum.epoch == 3
    with pytest.raises(ValueError, match="epoch"):
        other.load_state_dict({"epoch": -1})
    with pytest.raises(ValueError, match="curriculum"):
        rf.load_state_dict({})
    with pytest.raises(ValueError, match="start"):
        DtCurriculum(start=(0.3, 0.2))
    with pytest.raises(ValueError, match="factor"):
        DtCurriculum(factor=1.1)
    with pytest.raises(ValueError, match="dt_min_floor"):
        DtCurriculum(dt_min_floor=0.0)
    with pytest.raises(ValueError, match="dt_max_cap"):
        DtCurriculum(dt_max_cap=0.1)


def test_per_sample_degradation_arguments_come_from_batch_keys():
    seen = []

    def op(x, level, generator=None, i0=None):
        seen.append(i0)
        return x + 0.1

    x = torch.zeros(3, 1, 4, 4)
    photons = torch.tensor([1e4, 2e4, 3e4], dtype=torch.float64)
    net = Recorder()
    RelativeFlow(op, degradation_keys={"i0": "photons"}, seed=0).loss(net, {"image": x, "photons": photons})
    CumulativeVelocityFlow(op, target="direct", degradation_keys={"i0": "photons"}, seed=0).loss(
        net, {"image": x, "photons": photons})
    for values in seen:
        assert values.dtype == x.dtype and torch.equal(values, photons.float())
    with pytest.raises(ValueError, match="photons"):
        RelativeFlow(op, degradation_keys={"i0": "photons"}).loss(net, {"image": x})
