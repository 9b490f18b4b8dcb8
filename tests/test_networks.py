"""VelocityUNet: shapes, time handling, conditioning paths, null class / mask, errors (2D and 3D)."""

from __future__ import annotations

import pytest
import torch

from monai_flow.networks import VelocityUNet

DIMS = (2, 3)


pytestmark = pytest.mark.usefixtures("single_thread")

TINY = dict(channels=(8, 16), attention_levels=(False, False), norm_num_groups=8, num_res_blocks=1)


def tiny(spatial_dims, randomize_zero_init=True, **kw):
    """Tiny net; MONAI zero-initialises output convolutions (UNet output, ControlNet residuals),
    which would hide every input dependence, so those get random weights here."""
    torch.manual_seed(0)
    net = VelocityUNet(spatial_dims, **{**TINY, **kw}).eval()
    if randomize_zero_init:
        with torch.no_grad():
            for p in net.parameters():
                if not p.abs().sum():
                    p.normal_(0, 0.1)
    return net


def vol(spatial_dims, b=2, c=1, size=8, seed=1):
    return torch.randn(b, c, *[size] * spatial_dims, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("d", DIMS)
def test_shapes_and_time_forms(d):
    net = tiny(d, in_channels=2, out_channels=3)
    x = vol(d, c=2)
    assert net.spatial_divisor == 2
    with torch.no_grad():
        ref = net(x, torch.full((2,), 0.3))
        assert ref.shape == (2, 3, *[8] * d)
        for t in (0.3, torch.tensor(0.3), torch.tensor([0.3])):
            torch.testing.assert_close(net(x, t), ref)
        # per-sample times are honoured, and time matters
        per = net(x, torch.tensor([0.3, 0.9]))
        torch.testing.assert_close(per[0], ref[0])
        assert not torch.allclose(per[1], ref[1])


@pytest.mark.parametrize("d", DIMS)
def test_time_scale_is_internal(d):
    a, b = tiny(d, time_scale=1000.0), tiny(d, randomize_zero_init=False, time_scale=1.0)
    b.load_state_dict(a.state_dict())
    x = vol(d)
    with torch.no_grad():
        torch.testing.assert_close(a(x, 0.25), b(x, 250.0))
        torch.testing.assert_close(a(x, 0.25), a.unet(x, torch.full((2,), 250.0)))


@pytest.mark.parametrize("d", DIMS)
@pytest.mark.parametrize("mode", ("embedding", "cross_attention"))
def test_class_conditioning_and_null_class(d, mode):
    levels = (False, True) if mode == "cross_attention" else (False, False)
    net = tiny(d, num_classes=3, class_conditioning=mode, attention_levels=levels)
    assert net.null_class == 3
    x = vol(d)
    with torch.no_grad():
        v0 = net(x, 0.5, class_labels=torch.tensor([0, 0]))
        v2 = net(x, 0.5, class_labels=torch.tensor([2, 2]))
        vnull = net(x, 0.5)
        torch.testing.assert_close(vnull, net(x, 0.5, class_labels=torch.tensor([3, 3])))
    assert not torch.allclose(v0, v2) and not torch.allclose(v0, vnull)
    with pytest.raises(ValueError, match=r"class_labels must lie in \[0, 2\]"):
        net(x, 0.5, class_labels=torch.tensor([0, 4]))
    with pytest.raises(ValueError, match="class_labels must have shape"):
        net(x, 0.5, class_labels=torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="integer"):
        net(x, 0.5, class_labels=torch.tensor([0.0, 1.0]))


@pytest.mark.parametrize("d", DIMS)
@pytest.mark.parametrize("mode", ("controlnet", "concat", "both"))
def test_mask_conditioning_and_null_mask(d, mode):
    if mode != "concat":  # ControlNet starts as a copy of the UNet encoder with zero residual outputs
        fresh = tiny(d, randomize_zero_init=False, mask_channels=1, mask_conditioning=mode)
        torch.testing.assert_close(fresh.controlnet.conv_in.conv.weight, fresh.unet.conv_in.conv.weight)
        assert not fresh.controlnet.controlnet_mid_block.conv.weight.abs().sum()
    net = tiny(d, mask_channels=1, mask_conditioning=mode)
    assert (net.controlnet is not None) == (mode != "concat")
    x = vol(d)
    mask = (vol(d, seed=5) > 0).float()
    with torch.no_grad():
        vm = net(x, 0.5, mask=mask)
        vnull = net(x, 0.5)
        torch.testing.assert_close(vnull, net(x, 0.5, mask=torch.zeros_like(mask)))
    assert vm.shape == x.shape and not torch.allclose(vm, vnull)
    with pytest.raises(ValueError, match="mask must have shape"):
        net(x, 0.5, mask=mask[:, :, :4])


@pytest.mark.parametrize("d", DIMS)
def test_condition_channels(d):
    net = tiny(d, condition_channels=2, num_classes=2, mask_channels=1)
    x, cond = vol(d), vol(d, c=2, seed=3)
    with torch.no_grad():
        v = net(x, 0.1, class_labels=torch.tensor([0, 1]), mask=torch.ones_like(x), condition=cond)
        assert v.shape == x.shape
        assert not torch.allclose(net(x, 0.1, condition=cond), net(x, 0.1, condition=cond * 2))
    with pytest.raises(ValueError, match="condition is required"):
        net(x, 0.1)
    with pytest.raises(ValueError, match="condition given"):
        tiny(d)(x, 0.1, condition=cond)


def test_gradients_reach_all_branches():
    net = tiny(2, num_classes=2, mask_channels=1, mask_conditioning="both").train()
    x = vol(2)
    net(x, torch.rand(2), class_labels=torch.tensor([1, 2]), mask=torch.ones_like(x)).square().mean().backward()
    assert net.unet.class_embedding.weight.grad is not None
    assert net.controlnet.controlnet_mid_block.conv.weight.grad is not None


@pytest.mark.parametrize("d", DIMS)
def test_call_errors(d):
    net = tiny(d, channels=(8, 8, 8), attention_levels=(False, False, False))
    assert net.spatial_divisor == 4
    with pytest.raises(ValueError, match="divisible by spatial_divisor=4"):
        net(vol(d, size=6), 0.5)
    with pytest.raises(ValueError, match=r"t must be .* \(B,\)=\(2,\)"):
        net(vol(d), torch.zeros(3))
    with pytest.raises(ValueError, match=r"t must be"):
        net(vol(d), torch.zeros(2, 1))
    with pytest.raises(ValueError, match="x must have shape"):
        net(vol(d, c=2), 0.5)
    with pytest.raises(ValueError, match="num_classes=None"):
        net(vol(d), 0.5, class_labels=torch.tensor([0, 0]))
    with pytest.raises(ValueError, match="mask given"):
        net(vol(d), 0.5, mask=vol(d))


def test_construction_errors():
    with pytest.raises(ValueError, match="spatial_dims must be 2 or 3"):
        VelocityUNet(1)
    with pytest.raises(ValueError, match=r"multiple of norm_num_groups=8.*offending: \[12\]"):
        VelocityUNet(2, channels=(8, 12), attention_levels=(False, False), norm_num_groups=8)
    with pytest.raises(ValueError, match="attention_levels must have"):
        VelocityUNet(2, channels=(8, 16), attention_levels=(False,), norm_num_groups=8)
    with pytest.raises(ValueError, match="cross_attention"):
        VelocityUNet(2, **TINY, num_classes=2, class_conditioning="cross_attention")
    with pytest.raises(ValueError, match="mask_conditioning"):
        VelocityUNet(2, **TINY, mask_channels=1, mask_conditioning="add")
    with pytest.raises(ValueError, match="class_conditioning"):
        VelocityUNet(2, **TINY, num_classes=2, class_conditioning="film")
    with pytest.raises(ValueError, match="num_classes"):
        VelocityUNet(2, **TINY, num_classes=0)


@pytest.mark.parametrize("d", DIMS)
def test_flow_map_takes_a_second_time(d):
    net = tiny(d, flow_map=True, num_classes=2, mask_channels=1)
    x = vol(d)
    s = torch.tensor([0.2, 0.5])
    with torch.no_grad():
        u_short = net(x, s, target_time=s + 0.1, class_labels=torch.tensor([0, 1]))
        u_long = net(x, s, target_time=torch.tensor([0.9, 0.9]), class_labels=torch.tensor([0, 1]))
        u_other_class = net(x, s, target_time=s + 0.1, class_labels=torch.tensor([1, 0]))
        torch.testing.assert_close(net(x, s, target_time=s + 0.1), net(x, s, target_time=s + 0.1, class_labels=torch.tensor([2, 2])))
    assert u_short.shape == x.shape
    assert not torch.allclose(u_short, u_long) and not torch.allclose(u_short, u_other_class)
    with pytest.raises(ValueError, match="target_time is required"):
        net(x, s)
    with pytest.raises(ValueError, match="refused by velocity networks"):
        tiny(d)(x, s, target_time=s)


def test_untrained_flow_map_starts_as_a_velocity_network():
    """The interval branch starts at zero: u(x, s, t) = u(x, s, s) before training."""
    net = VelocityUNet(2, **TINY, flow_map=True)
    with torch.no_grad():
        for p in net.unet.out.parameters():
            p.normal_(0, 0.1)
        x = vol(2)
        torch.testing.assert_close(net(x, 0.3, target_time=0.3), net(x, 0.3, target_time=0.9))


def test_slice_wise_runs_a_2d_network_on_volumes_slice_by_slice():
    from monai_flow.networks import SliceWise

    net = tiny(2, num_classes=2, mask_channels=1)
    vol3 = torch.randn(2, 1, 8, 8, 5)
    mask = (torch.randn(2, 1, 8, 8, 5) > 0).float()
    t = torch.tensor([0.2, 0.7])
    labels = torch.tensor([0, 1])
    wrapped = SliceWise(net, slice_batch=3)
    assert wrapped.spatial_divisor == (net.spatial_divisor,) * 2 + (1,) and wrapped.null_class == 2
    with torch.no_grad():
        out = wrapped(vol3, t, class_labels=labels, mask=mask)
        for b in range(2):
            for k in (0, 4):
                ref = net(vol3[b : b + 1, ..., k], t[b : b + 1], class_labels=labels[b : b + 1], mask=mask[b : b + 1, ..., k])
                torch.testing.assert_close(out[b : b + 1, ..., k], ref)
        torch.testing.assert_close(wrapped(vol3[..., 0], 0.3), net(vol3[..., 0], 0.3))  # 2D passes through
    with pytest.raises(ValueError, match="SliceWise expects"):
        wrapped(torch.zeros(1, 1, 8), 0.1)


@pytest.mark.parametrize("mask_channels", [0, 1])
def test_without_mid_attention_the_cost_is_linear_in_the_pixels(mask_channels):
    """Counted FLOPs: 4x the pixels cost exactly 4x without the middle self-attention, more with it
    (attention is quadratic in the tokens of the lowest level)."""
    from torch.utils.flop_counter import FlopCounterMode

    kw = dict(channels=(8, 8, 8), attention_levels=(False, False, False), num_res_blocks=1, norm_num_groups=4,
              mask_channels=mask_channels)

    def flops(net, size):
        mask = {"mask": torch.zeros(1, 1, size, size)} if mask_channels else {}
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            net(torch.randn(1, 1, size, size), torch.tensor([0.3]), **mask)
        return counter.get_total_flops()

    for mid in (True, False):  # explicit attention matrices: FlopCounterMode does not count the fused kernel on CPU
        net = VelocityUNet(2, mid_attention=mid, fused_attention=False, **kw).eval()
        ratio = flops(net, 64) / flops(net, 32)
        assert (ratio == pytest.approx(4.0, rel=1e-3)) != mid, (mid, ratio)
        assert any("middle_block.attention" in k for k in net.state_dict()) == mid
    with pytest.raises(ValueError, match="mid_attention"):
        VelocityUNet(2, channels=(8, 8), attention_levels=(False, True), norm_num_groups=4, num_classes=2,
                     class_conditioning="cross_attention", mid_attention=False)
