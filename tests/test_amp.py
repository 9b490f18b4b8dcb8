"""Mixed precision (issue 15): the ``amp`` setting, float32 times and solver state under autocast, bf16
inference against fp32 on the CPU, a short bf16 training run, and ``amp`` in every bundle."""

from __future__ import annotations

import json

import pytest
import torch
from monai.bundle import ConfigParser

from bundle_helpers import BUNDLES

import monai.networks.nets.diffusion_model_unet as dmu
from monai_flow.engines import FlowTrainer
from monai_flow.flows import ConditionalFlowMatching
from monai_flow.inferers import RelativeFlowInferer, SlidingWindowFlowInferer
from monai_flow.inferers.base import AutocastInferer
from monai_flow.networks import VelocityUNet
from monai_flow.networks.precision import AutocastNetwork, amp_dtype, amp_name, autocast

# bf16 inference against fp32 (random small networks, 3 Euler steps): the deviation's RMS within 5% of the
# RMS of the correction fp32 made (measured: 1.7-3.1%), its maximum within 10% of the correction's maximum
BF16_RMS_TOLERANCE, BF16_MAX_TOLERANCE = 0.05, 0.10


def _net(spatial_dims: int = 2, **kwargs) -> VelocityUNet:
    torch.manual_seed(0)
    net = VelocityUNet(spatial_dims, channels=(8, 16, 16), attention_levels=(False, False, True), num_res_blocks=1,
                       norm_num_groups=8, **kwargs).eval()
    with torch.no_grad():  # the zero-initialised output layer would hide every difference
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return net


@pytest.mark.parametrize(("value", "expected"), [
    (None, None), (False, None), ("fp32", None), ("none", None), (torch.float32, None),
    ("bf16", torch.bfloat16), ("bfloat16", torch.bfloat16), (torch.bfloat16, torch.bfloat16),
    ("fp16", torch.float16), ("float16", torch.float16), (True, torch.float16),
])
def test_amp_setting_names_a_dtype(value, expected):
    assert amp_dtype(value) is expected
    assert amp_name(value) == {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[expected]


@pytest.mark.parametrize(("flags", "expected"), [
    ("fpu sse2 avx2 avx512f avx512bw", None),  # AVX-512 without BF16: bf16 would be emulated, slower
    ("fpu sse2 avx2 avx512f avx512_bf16", torch.bfloat16),
    ("fpu sse2 avx2 amx_tile amx_bf16", torch.bfloat16),
    ("", None),  # no bf16 feature (or a torch that cannot tell): full precision
])
def test_auto_amp_is_bf16_only_where_the_cpu_computes_it(monkeypatch, flags, expected):
    import monai_flow.networks.precision as precision

    monkeypatch.setattr(precision, "_cpu_flags", lambda: set(flags.split()))
    precision._native_bf16.cache_clear()
    try:
        assert amp_dtype("auto", "cpu") is expected
        assert amp_name("auto") == "auto"  # resolved per device when the network runs
        net = _net()
        seen = []
        hook = net.unet.conv_in.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
        out = AutocastNetwork(net, "auto")(torch.randn(1, 1, 16, 16), torch.tensor([0.3]))
        hook.remove()
        assert seen == [expected or torch.float32] and out.dtype == torch.float32
    finally:
        precision._native_bf16.cache_clear()


def test_unknown_amp_setting_is_refused():
    with pytest.raises(ValueError, match="amp must be one of"):
        amp_dtype("int8")
    with pytest.raises(ValueError, match="amp must be one of"):
        AutocastInferer(RelativeFlowInferer(), amp="fp8")


def test_no_timestep_passes_through_a_16_bit_float(monkeypatch):
    """Under bf16 autocast the (scaled) times reaching MONAI's get_timestep_embedding are float32, the
    time MLP computes in float32, and two times closer than bf16 resolves (500 vs 501 after the x1000
    scaling: bf16 steps by 2 there) give different outputs."""
    assert torch.tensor(500.0).bfloat16() == torch.tensor(501.0).bfloat16()  # what a 16-bit timestep would lose
    seen, mlp_out = [], []
    original = dmu.get_timestep_embedding

    def spy(timesteps, *args, **kwargs):
        seen.append(timesteps.dtype)
        return original(timesteps, *args, **kwargs)

    monkeypatch.setattr(dmu, "get_timestep_embedding", spy)
    net = _net(num_classes=2, mask_channels=1)  # the ControlNet has its own time embedding
    for module in (net.unet.time_embed, net.controlnet.time_embed):
        module.register_forward_hook(lambda m, i, o: mlp_out.append(o.dtype))
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad(), autocast("bf16", x):
        a = net(x, torch.tensor([0.5, 0.5]))
        b = net(x, torch.tensor([0.501, 0.501]))
    assert seen and all(d == torch.float32 for d in seen), seen
    assert mlp_out and all(d == torch.float32 for d in mlp_out), mlp_out
    assert a.dtype == torch.float32  # the output has the state's dtype
    assert not torch.equal(a, b)


def test_flow_map_interval_embedding_stays_float32(monkeypatch):
    seen = []
    original = dmu.get_timestep_embedding
    import monai_flow.networks.velocity_unet as vu

    def spy(timesteps, *args, **kwargs):
        seen.append(timesteps.dtype)
        return original(timesteps, *args, **kwargs)

    monkeypatch.setattr(dmu, "get_timestep_embedding", spy)
    monkeypatch.setattr(vu, "get_timestep_embedding", spy)
    net = _net(flow_map=True)
    x = torch.randn(1, 1, 16, 16)
    with torch.no_grad(), autocast("bf16", x):
        out = net(x, 0.2, target_time=0.7)
    assert len(seen) == 2 and all(d == torch.float32 for d in seen) and out.dtype == torch.float32


@pytest.mark.parametrize("sliding", [False, True], ids=["whole", "sliding_window_3d"])
def test_bf16_inference_agrees_with_fp32(sliding, single_thread):
    """bf16 autocast on the CPU: the state stays float32 and the result is within the stated tolerance of
    the fp32 result (relative to the change fp32 made), yet not equal (autocast did act)."""
    torch.manual_seed(1)
    if sliding:
        net = _net(3)
        x = 1.0 + 0.1 * torch.randn(1, 1, 24, 24, 16)
        inferer = SlidingWindowFlowInferer(RelativeFlowInferer((0.2, 0.1, 0.05)), roi_size=16, sw_batch_size=2,
                                           overlap=0.25)
    else:
        net = _net(2)
        x = 1.0 + 0.1 * torch.randn(2, 1, 32, 32)
        inferer = RelativeFlowInferer((0.2, 0.1, 0.05))
    with torch.no_grad():
        ref = AutocastInferer(inferer, None)(x, net)
        low = AutocastInferer(inferer, "bf16")(x, net)
    assert torch.equal(ref, inferer(x, net))  # amp off changes nothing
    assert low.dtype == torch.float32 and low.shape == x.shape
    change, err = ref - x, low - ref
    rms = lambda v: v.pow(2).mean().sqrt()  # noqa: E731
    assert change.abs().max() > 1e-3 and err.abs().max() > 0
    assert rms(err) <= BF16_RMS_TOLERANCE * rms(change), float(rms(err) / rms(change))
    assert err.abs().max() <= BF16_MAX_TOLERANCE * change.abs().max()


def test_autocast_network_reads_through_and_returns_the_input_dtype():
    net = _net(2, num_classes=3)
    wrapped = AutocastNetwork(net, "bf16")
    assert wrapped.null_class == 3 and wrapped.spatial_divisor == 4 and wrapped.amp == "bf16"
    x = torch.randn(1, 1, 16, 16)
    with torch.no_grad():
        assert wrapped(x, 0.3).dtype == torch.float32
    plain = AutocastNetwork(lambda x, t: x.bfloat16(), None)
    assert plain(x, 0.3).dtype == torch.float32  # off: output cast back only


def _trainer(amp, iterations=24, seed=0):
    torch.manual_seed(seed)
    net = VelocityUNet(2, channels=(8, 16), attention_levels=(False, False), num_res_blocks=1, norm_num_groups=8)
    g = torch.Generator().manual_seed(seed)
    base = torch.zeros(1, 1, 16, 16)
    base[..., 4:12, 4:12] = 1.0
    data = [{"image": base.expand(4, -1, -1, -1) + 0.05 * torch.randn(4, 1, 16, 16, generator=g)} for _ in range(iterations)]
    opt = torch.optim.Adam(net.parameters(), 3e-3)
    trainer = FlowTrainer("cpu", 1, data, net, opt, ConditionalFlowMatching(seed=seed), amp=amp, decollate=False)
    losses: list[float] = []
    from ignite.engine import Events

    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: losses.append(float(e.state.output["loss"].detach())))
    return trainer, losses


def test_short_bf16_training_lowers_the_loss(single_thread):
    trainer, losses = _trainer("bf16")
    assert trainer.amp_name == "bf16"
    trainer.run()
    assert trainer.scaler is None  # bf16 needs no loss scaling
    first, last = sum(losses[:4]) / 4, sum(losses[-4:]) / 4
    assert last < 0.7 * first, losses


def test_fp16_training_uses_a_grad_scaler(single_thread):
    trainer, losses = _trainer("fp16", iterations=2)
    trainer.run()
    assert isinstance(trainer.scaler, torch.amp.GradScaler) and len(losses) == 2
    assert all(torch.isfinite(torch.tensor(losses)))


NAMES = ["ct_denoise", "mr_denoise", "ct_restore", "motfm_generation"]


@pytest.mark.parametrize("name", NAMES)
def test_every_bundle_has_amp_in_training_and_inference(name):
    """``amp`` is an id of train.json (the trainer's, off by default) and inference.json (the inferer's, via
    AutocastInferer: ``"auto"`` for the two denoising bundles, whose speed goals it meets, off for the
    others), evaluated as deployed; train_gpu.json turns bf16 on."""
    configs = BUNDLES / name / "configs"
    train = json.loads((configs / "train.json").read_text())
    assert train["amp"] is None and train["train"]["trainer"]["amp"] == "@amp"
    gpu = json.loads((configs / "train_gpu.json").read_text())
    assert gpu["amp"] == "bf16"
    for files in (["inference.json"], ["train.json", "evaluate.json"]):
        parser = ConfigParser()
        parser.read_config([str(configs / f) for f in files])
        parser["device"] = "$torch.device('cpu')"
        assert parser["amp"] == ("auto" if name in ("ct_denoise", "mr_denoise") else None), files
        parser["amp"] = "bf16"
        inferer = parser.get_parsed_content("inferer")
        assert isinstance(inferer, AutocastInferer) and inferer.amp == "bf16", files
