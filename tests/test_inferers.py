"""Flow inferers: ODE integration, guidance, RelativeFlow schedules, sliding-window strategies."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
from monai.data import MetaTensor
from monai.networks.layers import Conv

from monai_flow.inferers import (
    FlipEnsembleInferer,
    FlowInferer,
    RelativeFlowInferer,
    SlidingWindowFlowInferer,
    make_noise,
    relative_dt_schedule,
)
from monai_flow.networks import VelocityUNet
from monai_flow.solvers import solve, uniform_time_grid


pytestmark = pytest.mark.usefixtures("single_thread")


def _tb(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Time as (B, 1, ...) for broadcasting; t 0-d, (1,) or (B,)."""
    t = torch.as_tensor(t, dtype=x.dtype, device=x.device).reshape(-1)
    return t.expand(x.shape[0]).reshape(-1, *([1] * (x.ndim - 1)))


class PointwiseNet(nn.Module):
    """Time-dependent 1x1-conv velocity: v = conv([x, condition, mask]) (1 + t) + cos(3 t) + e[label].

    Being pointwise, windowed evaluation equals whole-volume evaluation exactly. Records every call."""

    def __init__(self, spatial_dims, channels=1, num_classes=None, mask_channels=0, condition_channels=0, null=True):
        super().__init__()
        torch.manual_seed(0)
        self.conv = Conv[Conv.CONV, spatial_dims](channels + mask_channels + condition_channels, channels, 1)
        self.emb = nn.Embedding(num_classes + 1, channels) if num_classes else None
        self.num_classes, self.mask_channels, self.null = num_classes, mask_channels, null
        self.calls: list[int] = []

    @property
    def null_class(self):
        return self.num_classes if self.null else None

    def forward(self, x, t, class_labels=None, mask=None, condition=None):
        self.calls.append(x.shape[0])
        parts = [x] + [c for c in (condition,) if c is not None]
        if self.mask_channels:
            parts.append(mask if mask is not None else x.new_zeros(x.shape[0], self.mask_channels, *x.shape[2:]))
        v = self.conv(torch.cat(parts, 1)) * (1 + _tb(t, x)) + torch.cos(3 * _tb(t, x))
        if self.emb is not None:
            labels = class_labels if class_labels is not None else torch.full((x.shape[0],), self.num_classes)
            v = v + self.emb(labels).reshape(x.shape[0], -1, *([1] * (x.ndim - 2)))
        return v


# ----------------------------------------------------------------------------------- FlowInferer
@pytest.mark.parametrize("method", ("euler", "rk4"))
def test_flow_inferer_matches_solver_and_keeps_meta(method):
    net = PointwiseNet(2)
    noise = make_noise((2, 1, 6, 5), seed=0)
    meta = MetaTensor(noise, affine=torch.diag(torch.tensor([2.0, 3.0, 1.0])), meta={"filename_or_obj": "n.nii"})
    with torch.no_grad():
        out = FlowInferer(num_steps=5, solver=method)(meta, net)
        assert len(net.calls) == 5 * (4 if method == "rk4" else 1)
        ref = solve(net, noise, uniform_time_grid(5), method).x
    torch.testing.assert_close(out.as_tensor(), ref)
    assert isinstance(out, MetaTensor) and out.meta["filename_or_obj"] == "n.nii"
    torch.testing.assert_close(out.affine, meta.affine)


def test_flow_inferer_custom_time_grid_and_errors():
    net = PointwiseNet(2)
    x = make_noise((1, 1, 4, 4), seed=1)
    inf = FlowInferer(solver="heun", time_grid=(0.0, 0.3, 1.0))
    assert inf.num_steps == 2
    torch.testing.assert_close(inf(x, net), solve(net, x, torch.tensor([0.0, 0.3, 1.0]), "heun").x)
    with pytest.raises(ValueError, match="time_grid"):
        FlowInferer(time_grid=(0.0, 0.5, 0.5))
    with pytest.raises(ValueError, match="method"):
        FlowInferer(solver="dopri5")


def test_sample_is_reproducible():
    net = PointwiseNet(2)
    inf = FlowInferer(num_steps=2)
    a = inf.sample(net, (2, 1, 4, 4), seed=3)
    b = inf.sample(net, (2, 1, 4, 4), generator=torch.Generator().manual_seed(3))
    c = inf.sample(net, (2, 1, 4, 4), seed=4)
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)
    torch.testing.assert_close(make_noise((3,), seed=3), torch.randn(3, generator=torch.Generator().manual_seed(3)))
    with pytest.raises(ValueError, match="either seed or generator"):
        make_noise((3,), seed=1, generator=torch.Generator())


# -------------------------------------------------------------------------------------- guidance
@pytest.mark.parametrize("with_null", (True, False))
def test_classifier_free_guidance(with_null):
    net = PointwiseNet(2, num_classes=3, mask_channels=1, null=with_null)
    x = make_noise((2, 1, 4, 4), seed=2)
    labels, mask = torch.tensor([0, 2]), (make_noise((2, 1, 4, 4), seed=5) > 0).float()
    with torch.no_grad():
        cond = FlowInferer(3)(x, net, class_labels=labels, mask=mask)
        uncond = FlowInferer(3)(x, net)
        net.calls.clear()
        w1 = FlowInferer(3, guidance_scale=1.0)(x, net, class_labels=labels, mask=mask)
        assert net.calls == [2, 2, 2]
        w0 = FlowInferer(3, guidance_scale=0.0)(x, net, class_labels=labels, mask=mask)
        net.calls.clear()
        w3 = FlowInferer(3, guidance_scale=3.0)(x, net, class_labels=labels, mask=mask)
        calls = list(net.calls)

        def guided(z, t):
            vc, vu = net(z, t, class_labels=labels, mask=mask), net(z, t, mask=torch.zeros_like(mask))
            return vu + 3.0 * (vc - vu)

        ref = solve(guided, x, uniform_time_grid(3)).x
    torch.testing.assert_close(w1, cond)
    torch.testing.assert_close(w0, uncond)
    assert not torch.allclose(cond, uncond)
    if with_null:  # one call on a doubled batch per step
        assert calls == [4, 4, 4]
    else:  # no null label known: separate conditional and unconditional calls
        assert calls == [2] * 6
    torch.testing.assert_close(w3, ref)


# -------------------------------------------------------------------------------- RelativeFlow
class Oracle(nn.Module):
    """Exact relative-flow network towards x_ref: one step of any dt lands on x_ref."""

    def __init__(self, x_ref):
        super().__init__()
        self.x_ref = x_ref

    def forward(self, x, dt):
        return (self.x_ref - x) / torch.expm1(_tb(dt, x))


class NoiseShrink(nn.Module):
    """For pure noise (clean image 0): a step of dt must divide the noise by e^dt,
    x + (e^dt - 1) N = x e^-dt  =>  N = -x e^-dt. Records the dt it sees."""

    def __init__(self):
        super().__init__()
        self.dts = []

    def forward(self, x, dt):
        self.dts.append(dt.clone())
        return -x * torch.exp(-_tb(dt, x))


def test_relative_oracle_one_step():
    x_ref = make_noise((2, 1, 5, 5), seed=0)
    y = x_ref + 0.3 * make_noise((2, 1, 5, 5), seed=1)
    out = RelativeFlowInferer(dt_schedule=(0.3,))(y, Oracle(x_ref))
    torch.testing.assert_close(out, x_ref)
    out3 = RelativeFlowInferer()(y, Oracle(x_ref))  # default (0.2, 0.1, 0.05): stays at x_ref
    torch.testing.assert_close(out3, x_ref)


def test_relative_fixed_schedule_scales_noise():
    x = make_noise((1, 1, 16, 16), seed=0)
    net = NoiseShrink()
    out = RelativeFlowInferer(dt_schedule=(0.2, 0.1, 0.05))(x, net)
    torch.testing.assert_close(out, x * math.exp(-0.35))
    torch.testing.assert_close(torch.stack(net.dts), torch.tensor([0.2, 0.1, 0.05]))


def _std(x):
    return x.flatten(1).std(dim=1)


def test_relative_auto_schedule():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 1, 16, 16, generator=g) * torch.tensor([0.5, 2.0, 0.05]).reshape(3, 1, 1, 1)
    inf = RelativeFlowInferer(dt_schedule="auto", noise_estimator=_std, target_std=0.1, max_dt=0.2)
    table = inf.dt_table(x)
    n_steps = (table > 0).sum(1)
    assert n_steps[1] > n_steps[0] > n_steps[2] == 0  # noisier -> more steps; clean -> none
    assert table.max() <= 0.2 + 1e-12
    gaps = torch.log(_std(x).double() / 0.1).clamp_min(0)
    torch.testing.assert_close(table.sum(1), gaps)
    steps = inf.step_sequence(x)
    assert len(steps) == int(n_steps.max()) and steps[0][0].shape == (3,)
    out = inf(x, NoiseShrink())
    # the inferer composes the steps: with a network that divides the noise by exactly e^dt per step,
    # every sample ends at the target level and the clean one is untouched (that a *trained* network
    # moves at that speed is tested with a fitted network in test_quality_time.py)
    torch.testing.assert_close(_std(out)[:2], torch.full((2,), 0.1))
    torch.testing.assert_close(out[2], x[2])


def test_relative_schedule_helper_and_errors():
    torch.testing.assert_close(torch.tensor(relative_dt_schedule(0.35)), torch.tensor([0.2, 0.1, 0.05]))
    assert relative_dt_schedule(0.0) == [] and relative_dt_schedule(-1.0) == []
    lens = [len(relative_dt_schedule(g)) for g in (0.03, 0.1, 0.35, 1.0, 3.0)]
    assert lens == sorted(lens) and lens[-1] > lens[0]
    for g in (0.07, 0.5, 2.3):
        s = relative_dt_schedule(g, max_dt=0.3)
        assert abs(sum(s) - g) < 1e-9 and max(s) <= 0.3 and s == sorted(s, reverse=True)
    with pytest.warns(UserWarning, match="max_steps"):
        assert len(relative_dt_schedule(10.0, max_steps=5)) == 5
    with pytest.raises(ValueError, match="min_dt"):
        relative_dt_schedule(1.0, max_dt=0.1, min_dt=0.2)
    with pytest.raises(ValueError, match="noise_estimator"):
        RelativeFlowInferer(dt_schedule="auto")
    with pytest.raises(ValueError, match="dt > 0"):
        RelativeFlowInferer(dt_schedule=(0.1, 0.0))
    with pytest.raises(ValueError, match=r"\(B,\)"):
        inf = RelativeFlowInferer("auto", noise_estimator=lambda x: torch.ones(5), target_std=1.0)
        inf(torch.ones(2, 1, 4, 4), None)


# ------------------------------------------------------------------------------ sliding window
@pytest.mark.parametrize("strategy", ("per_step", "per_window"))
@pytest.mark.parametrize("d", (2, 3))
def test_sliding_window_flow_matches_direct(strategy, d):
    net = PointwiseNet(d, num_classes=2, mask_channels=1, condition_channels=1)
    size = (13, 11, 7)[:d]
    x = make_noise((2, 1, *size), seed=0)
    cond = dict(
        class_labels=torch.tensor([1, 0]),
        mask=(make_noise((2, 1, *size), seed=1) > 0).float(),
        condition=make_noise((2, 1, *size), seed=2),
    )
    flow = FlowInferer(num_steps=3, solver="midpoint", guidance_scale=2.0)
    sw = SlidingWindowFlowInferer(flow, roi_size=(8, 6, 8)[:d], sw_batch_size=3, overlap=0.5, strategy=strategy)
    with torch.no_grad():
        torch.testing.assert_close(sw(x, net, **cond), flow(x, net, **cond), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("strategy", ("per_step", "per_window"))
def test_sliding_window_relative_auto_matches_direct(strategy):
    x = make_noise((2, 1, 12, 12), seed=0) * torch.tensor([0.3, 1.0]).reshape(2, 1, 1, 1)
    rel = RelativeFlowInferer("auto", noise_estimator=_std, target_std=0.1)
    net = NoiseShrink()
    sw = SlidingWindowFlowInferer(rel, roi_size=8, sw_batch_size=4, overlap=0.25, strategy=strategy)
    torch.testing.assert_close(sw(x, net), rel(x, net), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("sw_batch_size", (1, 2, 3, 4, 5, 7, 8, 12))
@pytest.mark.parametrize("strategy", ("per_step", "per_window"))
def test_sliding_window_per_sample_schedules_any_sw_batch_size(strategy, sw_batch_size):
    """Per-sample dt schedules, labels, masks and conditions reach every window exactly once, whichever
    samples a window batch holds: 4 samples x 3 windows, so every ``sw_batch_size`` here either splits a
    sample's windows over calls or mixes samples in one call (a wrong time per window changes the output)."""
    net = PointwiseNet(2, num_classes=2, mask_channels=1, condition_channels=1)  # pointwise, time-dependent
    size = (16, 32)  # roi 16, overlap 0.5: 1 x 3 windows per sample
    x = make_noise((4, 1, *size), seed=0)
    cond = dict(
        class_labels=torch.tensor([1, 0, 1, 0]),
        mask=(make_noise((4, 1, *size), seed=1) > 0).float(),
        condition=make_noise((4, 1, *size), seed=2),
    )
    sigma = torch.tensor([0.25, 1.0, 0.12, 0.05])  # gaps ln(sigma / 0.1): 6, 13, 3 and 0 steps
    rel = RelativeFlowInferer("auto", noise_estimator=lambda _: sigma, target_std=0.1)
    assert (rel.dt_table(x) > 0).sum(1).tolist() == [6, 13, 3, 0]
    sw = SlidingWindowFlowInferer(rel, roi_size=16, sw_batch_size=sw_batch_size, overlap=0.5, strategy=strategy)
    with torch.no_grad():
        torch.testing.assert_close(sw(x, net, **cond), rel(x, net, **cond), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("strategy", ("per_step", "per_window"))
def test_sliding_window_call_count(strategy):
    net = PointwiseNet(2)
    sw = SlidingWindowFlowInferer(FlowInferer(3, "heun"), roi_size=8, overlap=0.0, strategy=strategy)
    out = sw(make_noise((1, 1, 16, 16), seed=0), net)
    assert out.shape == (1, 1, 16, 16)
    assert net.calls == [1] * (4 * 3 * 2)  # windows x steps x NFE per step


@pytest.mark.parametrize("strategy", ("per_step", "per_window"))
def test_sliding_window_velocity_unet_3d_meta(strategy):
    torch.manual_seed(0)
    net = VelocityUNet(3, channels=(8, 8), attention_levels=(False, False), norm_num_groups=8, num_res_blocks=1)
    net.eval()
    with torch.no_grad():  # MONAI zero-initialises the output convolution
        net.unet.out[-1].conv.weight.normal_(0, 0.1)
    affine = torch.tensor([[0.0, 0, 2, 5], [0, 1.5, 0, -3], [1.2, 0, 0, 7], [0, 0, 0, 1]])
    x = MetaTensor(make_noise((1, 1, 12, 10, 6), seed=0), affine=affine, meta={"filename_or_obj": "vol.nii.gz"})
    sw = SlidingWindowFlowInferer(FlowInferer(2), roi_size=(8, 8, 8), overlap=0.25, strategy=strategy, progress=False)
    with torch.no_grad():
        out = sw(x, net)  # the roi exceeds the last dimension (6): padded and cropped back
    assert isinstance(out, MetaTensor) and out.shape == x.shape
    torch.testing.assert_close(out.affine, x.affine)
    assert out.meta["filename_or_obj"] == "vol.nii.gz"
    assert torch.isfinite(out).all() and not torch.allclose(out.as_tensor(), x.as_tensor())
    with pytest.raises(ValueError, match="divisible by the network's spatial_divisor=2"):
        SlidingWindowFlowInferer(FlowInferer(1), roi_size=(8, 7, 8))(x, net)


@pytest.mark.parametrize("strategy", ("per_step", "per_window"))
def test_sliding_window_fits_the_window_to_a_thin_volume(strategy):
    """Along an axis thinner than the roi the windows shrink to the volume (a multiple of the network's
    spatial_divisor): the network sees no zero padding but what lies below one divisor (a 2-voxel
    remainder here); the padded voxels are cropped back."""
    seen = []

    class Recording(PointwiseNet):
        spatial_divisor = 4

        def forward(self, x, t, *args, **kwargs):
            seen.append((tuple(x.shape[2:]), int((x == 0).sum())))
            return super().forward(x, t, *args, **kwargs)

    sw = SlidingWindowFlowInferer(FlowInferer(1), roi_size=(32, 32, 32), overlap=0.25, strategy=strategy, progress=False)
    for depth, window, padded in ((14, 12, 0), (3, 4, 1)):  # 14 slices: windows of 12; 3: one window of 4, 1 padded
        seen.clear()
        x = make_noise((1, 1, 40, 36, depth), seed=0) + 5.0  # no zero inside the volume
        with torch.no_grad():
            out = sw(x, Recording(3))
        assert {shape for shape, _ in seen} == {(32, 32, window)}, depth
        assert {zeros for _, zeros in seen} == {32 * 32 * padded}, depth
        with torch.no_grad():
            whole = FlowInferer(1)(x, Recording(3))
        torch.testing.assert_close(out, whole, rtol=1e-5, atol=1e-5)  # pointwise: as the whole volume at once


def test_sliding_window_errors():
    with pytest.raises(ValueError, match="strategy"):
        SlidingWindowFlowInferer(FlowInferer(1), 8, strategy="per_voxel")
    with pytest.raises(ValueError, match="flow_inferer"):
        SlidingWindowFlowInferer(object(), 8)  # type: ignore[arg-type]


def test_inferer_in_monai_evaluator():
    from ignite.engine import Events
    from monai.engines import SupervisedEvaluator

    net = PointwiseNet(2)
    data = [{"image": make_noise((1, 1, 8, 8), seed=i), "label": torch.zeros(1, 1, 8, 8)} for i in range(2)]
    outs = []
    evaluator = SupervisedEvaluator(
        device=torch.device("cpu"),
        val_data_loader=data,
        network=net,
        inferer=SlidingWindowFlowInferer(FlowInferer(2), roi_size=4),
        decollate=False,
    )
    evaluator.add_event_handler(Events.ITERATION_COMPLETED, lambda e: outs.append(e.state.output["pred"]))
    evaluator.run()
    assert len(outs) == 2
    torch.testing.assert_close(outs[1], FlowInferer(2)(data[1]["image"], net))


def test_docs_examples_run():
    """Every python block of docs/inference.md runs as is."""
    import pathlib
    import re

    doc = pathlib.Path(__file__).resolve().parents[1] / "docs" / "inference.md"
    blocks = re.findall(r"```python\n(.*?)```", doc.read_text(), re.S)
    assert len(blocks) >= 4
    for i, code in enumerate(blocks):
        exec(compile(code, f"{doc.name}[{i}]", "exec"), {})


def test_split_dt_schedule_keeps_the_total_and_the_template_shape():
    from monai_flow.inferers.relative import split_dt_schedule

    assert split_dt_schedule(0.35, 3) == pytest.approx([0.2, 0.1, 0.05])
    assert split_dt_schedule(0.1, 1) == pytest.approx([0.1])
    steps = split_dt_schedule(2.0, 6, max_dt=0.4, min_dt=0.05)
    assert sum(steps) == pytest.approx(2.0) and steps == sorted(steps, reverse=True)
    with pytest.raises(ValueError, match="steps"):
        split_dt_schedule(0.3, 0)
    with pytest.raises(ValueError, match="total"):
        split_dt_schedule(0.0, 2)


def _ramp_inferer(calls):
    """Not mirror-equivariant: adds the row index (axis 0) to the image; records each call's input."""

    def inferer(x, network):
        calls.append(x.clone())
        return x + torch.arange(x.shape[2], dtype=x.dtype).view(1, 1, -1, *([1] * (x.ndim - 3)))

    return inferer


@pytest.mark.parametrize("axes", [(0,), (0, 1), (0, 1, 2)])
def test_flip_ensemble_averages_mirrored_runs(axes):
    x = MetaTensor(torch.randn(2, 1, 5, 4, 3), meta={"note": "kept"})
    calls = []
    out = FlipEnsembleInferer(_ramp_inferer(calls), axes)(x, None)
    # mirroring axis 0 reverses the ramp; the mean of a ramp and its reverse is (H - 1) / 2 everywhere
    torch.testing.assert_close(out.as_tensor(), x.as_tensor() + 2.0)
    assert isinstance(out, MetaTensor) and out.meta["note"] == "kept" and out.shape == x.shape
    assert len(calls) == 2 ** len(axes)
    assert sum(torch.equal(c, x.as_tensor().flip([a + 2 for a in axes])) for c in calls) == 1  # every flip once


def test_flip_ensemble_keeps_what_is_not_mirrored_and_leaves_equivariant_inferers_unchanged():
    x = torch.randn(1, 1, 6, 5)
    calls = []
    out = FlipEnsembleInferer(_ramp_inferer(calls), (1,))(x, None)  # the ramp runs along axis 0: never averaged
    torch.testing.assert_close(out, x + torch.arange(6.0).view(1, 1, 6, 1))
    pointwise = FlipEnsembleInferer(lambda v, net: torch.tanh(v) * 3, (0, 1))
    torch.testing.assert_close(pointwise(x, None), torch.tanh(x) * 3)


def test_flip_ensemble_errors():
    with pytest.raises(ValueError, match="distinct"):
        FlipEnsembleInferer(lambda v, n: v, (0, 0))
    with pytest.raises(ValueError, match="2 spatial axes"):
        FlipEnsembleInferer(lambda v, n: v, (0, 2))(torch.zeros(1, 1, 4, 4), None)
