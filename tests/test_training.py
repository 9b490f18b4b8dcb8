"""Training acceptance tests: tiny seeded networks learn class/mask-conditional generation (MOTFM)
and denoising from noisy references only (RelativeFlow), in 2D, plus 3D smoke runs."""

import math

import pytest
import torch
from monai.data import DataLoader, Dataset
from monai.handlers import from_engine
from monai.networks.layers import Conv

from monai_flow.engines import CurriculumHandler, FlowTrainer
from monai_flow.flows import ConditionalFlowMatching, DtCurriculum, RelativeFlow, relative_euler_step
from monai_flow.inferers import FlowInferer, RelativeFlowInferer
from monai_flow.networks import VelocityUNet
from monai_flow.transforms import MRDegradation


pytestmark = pytest.mark.usefixtures("single_thread")


class TinyVelocityNet(torch.nn.Module):
    """Per-voxel MLP (plus one 3x3 conv) on [x, mask, t, coordinates, class embedding], 2D or 3D.

    Follows the network contract ``net(x, t, class_labels=None, mask=None, condition=None)``;
    ``class_labels=None`` means the null class ``num_classes``, ``mask=None`` a zeros mask.
    """

    def __init__(self, spatial_dims=2, channels=1, num_classes=None, mask_channels=0, hidden=32, kernel_size=1):
        super().__init__()
        conv = Conv[Conv.CONV, spatial_dims]
        self.spatial_dims, self.mask_channels, self.null_class = spatial_dims, mask_channels, num_classes
        self.emb = torch.nn.Embedding(num_classes + 1, 4) if num_classes else None
        c_in = channels + mask_channels + 1 + spatial_dims + (4 if num_classes else 0)
        self.body = torch.nn.Sequential(
            conv(c_in, hidden, kernel_size, padding=kernel_size // 2),
            torch.nn.SiLU(),
            conv(hidden, hidden, kernel_size, padding=kernel_size // 2),
            torch.nn.SiLU(),
            conv(hidden, hidden, 1),
            torch.nn.SiLU(),
            conv(hidden, channels, 1),
        )

    def forward(self, x, t, class_labels=None, mask=None, condition=None):
        b, spatial = x.shape[0], x.shape[2:]
        expand = lambda v: v.reshape(b, -1, *([1] * self.spatial_dims)).expand(-1, -1, *spatial)  # noqa: E731
        grids = torch.meshgrid(*[torch.linspace(-1, 1, s, device=x.device) for s in spatial], indexing="ij")
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device).reshape(-1).expand(b)
        feats = [x, expand(t), torch.stack(grids).unsqueeze(0).expand(b, *([-1] * (1 + len(spatial))))]
        if self.mask_channels:
            feats.append(torch.zeros(b, self.mask_channels, *spatial) if mask is None else mask.to(x.dtype))
        if self.emb is not None:
            labels = torch.full((b,), self.null_class, dtype=torch.long) if class_labels is None else class_labels
            feats.append(expand(self.emb(labels.reshape(b))))
        return self.body(torch.cat(feats, 1))


@torch.no_grad()
def euler_generate(net, shape, steps=20, seed=0, **cond):
    """Integrate dx/dt = net(x, t, **cond) from t=0 (noise) to t=1 (data)."""
    x = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    for i in range(steps):
        t = torch.full((shape[0],), i / steps)
        x = x + net(x, t, **cond) / steps
    return x


def two_class_data(n, size=8, seed=0):
    """Class 0: bright left half, class 1: bright right half (+1 / -1, small noise)."""
    g = torch.Generator().manual_seed(seed)
    items = []
    for i in range(n):
        img = -torch.ones(1, size, size)
        half = slice(0, size // 2) if i % 2 == 0 else slice(size // 2, size)
        img[..., half] = 1.0
        items.append({"image": img + 0.05 * torch.randn(img.shape, generator=g), "label": i % 2})
    return items


def test_class_conditional_generation_2d_flow_trainer():
    torch.manual_seed(0)
    net = TinyVelocityNet(2, num_classes=2)
    loader = DataLoader(Dataset(two_class_data(128)), batch_size=32, shuffle=True, num_workers=0)
    objective = ConditionalFlowMatching(p_uncond=0.1, seed=0)
    trainer = FlowTrainer("cpu", 120, loader, net, torch.optim.Adam(net.parameters(), 3e-3), objective)
    trainer.run()
    net.eval()
    half = 4

    def class_margin(x, c):  # mean of the bright half minus the dark half; ideal 2.0
        left, right = x[..., :half].mean((1, 2, 3)), x[..., half:].mean((1, 2, 3))
        return left - right if c == 0 else right - left

    for c in (0, 1):
        labels = torch.full((16,), c)
        x = euler_generate(net, (16, 1, 8, 8), class_labels=labels)
        assert (class_margin(x, c) > 1.2).all(), (c, class_margin(x, c))
        # the same through the helper's inferer, with classifier-free guidance (null class learned via p_uncond)
        with torch.no_grad():
            x = FlowInferer(num_steps=20, guidance_scale=2.0).sample(net, (16, 1, 8, 8), seed=c, class_labels=labels)
        assert (class_margin(x, c) > 1.2).all(), (c, class_margin(x, c))


def test_mask_conditional_generation_2d():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)

    def batch(n):
        lo = torch.randint(0, 5, (n, 2), generator=g)
        size = torch.randint(2, 5, (n, 2), generator=g)
        mask = torch.zeros(n, 1, 8, 8)
        for i in range(n):
            mask[i, 0, lo[i, 0] : lo[i, 0] + size[i, 0], lo[i, 1] : lo[i, 1] + size[i, 1]] = 1
        return {"image": 2 * mask - 1 + 0.05 * torch.randn(mask.shape, generator=g), "mask": mask}

    net = TinyVelocityNet(2, mask_channels=1)
    opt = torch.optim.Adam(net.parameters(), 3e-3)
    cfm = ConditionalFlowMatching(seed=0)
    for _ in range(300):
        opt.zero_grad()
        cfm.loss(net, batch(32)).backward()
        opt.step()
    test = batch(16)
    x = euler_generate(net.eval(), (16, 1, 8, 8), mask=test["mask"])
    corr = torch.stack([torch.corrcoef(torch.stack([a.flatten(), m.flatten()]))[0, 1] for a, m in zip(x, test["mask"])])
    assert corr.min() > 0.9, corr


def psnr(x, ref, data_range=1.0):
    return 10 * math.log10(data_range**2 / torch.mean((x - ref) ** 2).item())


class AdditiveGaussian:
    """y = x + s_ref sqrt(e^{2 dt} - 1) n: CoT step multiplying the noise std by e^dt."""

    def __init__(self, s_ref):
        self.s_ref = s_ref

    def __call__(self, x, dt, generator=None):
        dt = torch.as_tensor(dt, dtype=x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
        return x + self.s_ref * torch.sqrt(torch.expm1(2 * dt)) * torch.randn(x.shape, generator=generator)


def smooth_images(n, spatial_dims=2, size=16, seed=0):
    """Piecewise-smooth images in [0, 1]: coarse random fields upsampled."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 1, *([4] * spatial_dims), generator=g)
    mode = "bilinear" if spatial_dims == 2 else "trilinear"
    return torch.nn.functional.interpolate(coarse, size=[size] * spatial_dims, mode=mode, align_corners=True)


def test_relative_flow_denoises_from_noisy_references_2d():
    torch.manual_seed(0)
    s_ref = 0.1
    g = torch.Generator().manual_seed(2)
    clean = smooth_images(512)
    noisy_refs = clean + s_ref * torch.randn(clean.shape, generator=g)  # the only training data
    net = TinyVelocityNet(2, hidden=32, kernel_size=3)
    opt = torch.optim.Adam(net.parameters(), 2e-3)
    rf = RelativeFlow(AdditiveGaussian(s_ref), DtCurriculum(start=(0.1, 0.3), factor=1.0), seed=0)
    for i in range(300):
        idx = torch.randint(0, 512, (32,), generator=g)
        opt.zero_grad()
        rf.loss(net, noisy_refs[idx]).backward()
        opt.step()
    test_clean = smooth_images(16, seed=9)
    x = test_clean + s_ref * torch.randn(test_clean.shape, generator=g)
    before = psnr(x, test_clean)
    with torch.no_grad():
        for dt in (0.2, 0.1, 0.05):
            dt = torch.full((16,), dt)
            x = relative_euler_step(x, net(x, dt), dt)
    after = psnr(x, test_clean)
    assert after > before + 2.0, (before, after)


def test_3d_smoke_velocity_unet_cfm():
    """MOTFM in 3D with the library's VelocityUNet (class + mask conditioning) through FlowTrainer and FlowInferer."""
    torch.manual_seed(0)
    images = smooth_images(4, spatial_dims=3, size=8)
    data = [{"image": im, "label": i % 2, "mask": (im > 0.5).float()} for i, im in enumerate(images)]
    loader = DataLoader(Dataset(data), batch_size=2, num_workers=0)
    net = VelocityUNet(3, 1, channels=(8, 8), attention_levels=(False, False), num_res_blocks=1, norm_num_groups=8,
                       num_classes=2, mask_channels=1, mask_conditioning="concat")
    objective = ConditionalFlowMatching(p_uncond=0.5, ot_coupling=True, time_sampling="logit_normal", seed=0)
    trainer = FlowTrainer("cpu", 1, loader, net, torch.optim.Adam(net.parameters(), 1e-3), objective)
    trainer.run()
    assert trainer.state.iteration == 2 and math.isfinite(from_engine(["loss"], first=True)(trainer.state.output))
    mask = data[0]["mask"][None].repeat(2, 1, 1, 1, 1)
    with torch.no_grad():
        x = FlowInferer(num_steps=2, guidance_scale=1.5).sample(
            net.eval(), (2, 1, 8, 8, 8), seed=0, class_labels=torch.tensor([0, 1]), mask=mask
        )
    assert x.shape == (2, 1, 8, 8, 8) and torch.isfinite(x).all()


def test_3d_smoke_relative_flow_mr():
    """RelativeFlow in 3D with the MR (Rician) operator, curriculum handler and RelativeFlowInferer."""
    torch.manual_seed(0)
    images = smooth_images(4, spatial_dims=3, size=8) + 0.05 * torch.rand(4, 1, 8, 8, 8)
    loader = DataLoader(Dataset([{"image": im} for im in images]), batch_size=2, num_workers=0)
    net = TinyVelocityNet(3, kernel_size=3, hidden=8)
    objective = RelativeFlow(MRDegradation(reference_std=0.05), DtCurriculum(), seed=0)
    trainer = FlowTrainer("cpu", 2, loader, net, torch.optim.Adam(net.parameters(), 1e-3), objective,
                          train_handlers=[CurriculumHandler()])
    trainer.run()
    assert trainer.state.iteration == 4 and math.isfinite(from_engine(["loss"], first=True)(trainer.state.output))
    assert objective.curriculum.epoch == 2
    with torch.no_grad():
        x = RelativeFlowInferer((0.2, 0.1))(images[:2], net)
    assert x.shape == (2, 1, 8, 8, 8) and torch.isfinite(x).all()
