"""Same seed, same bits on the CPU: transforms, degradation operators, inferers and training.

Each check also makes sure the randomness is real (another seed, or the next call, differs), so
that a test cannot pass on an output that ignores its seed. docs/reproducibility.md states what
these guarantees are and what changes on a GPU.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ignite.engine import Events
from monai.data import DataLoader, Dataset, MetaTensor
from monai.transforms import Compose
from monai.utils import set_determinism

from monai_flow.engines import FlowTrainer
from monai_flow.flows import DtCurriculum, RelativeFlow
from monai_flow.inferers import FlowInferer, RelativeFlowInferer, SlidingWindowFlowInferer
from monai_flow.networks import VelocityUNet
from monai_flow.transforms import (
    CTDegradation,
    MRDegradation,
    RandLowDoseCTNoise,
    RandLowDoseCTNoised,
    RandRicianMRNoise,
    RandRicianMRNoised,
)


@pytest.fixture(autouse=True)
def _restore_global_state(single_thread):
    yield
    set_determinism(None)
    torch.use_deterministic_algorithms(False)


def same(a, b) -> bool:
    """Bit-identical (NaN-free) tensors / arrays."""
    return torch.equal(torch.as_tensor(np.asarray(a)), torch.as_tensor(np.asarray(b)))


def phantom_ct(lead=(1,), size: int = 32, depth: int | None = None) -> torch.Tensor:
    """A water disk in air, in HU: (*lead, size, size) or (*lead, size, size, depth)."""
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    img = torch.where(xx**2 + yy**2 < 0.6, 0.0, -1000.0)
    img = img if depth is None else img[..., None].expand(size, size, depth)
    return img.expand(*lead, *img.shape).clone()


def phantom_mr(shape=(1, 24, 24)) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(3)) + 0.5


def tiny_net(spatial_dims: int = 2, seed: int = 0) -> VelocityUNet:
    """A small VelocityUNet; its zero-initialised output layer is perturbed so that it is not the zero map."""
    torch.manual_seed(seed)
    net = VelocityUNet(spatial_dims, channels=(8, 8), attention_levels=(False, False), num_res_blocks=1, norm_num_groups=8)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return net.eval()


# ---------------------------------------------------------------------------------------------
# transforms
# ---------------------------------------------------------------------------------------------
ARRAY_TRANSFORMS = {
    "ct": (lambda: RandLowDoseCTNoise(dose_fraction=(0.2, 0.6), spacing=(1.0, 1.0), num_views=60), phantom_ct),
    "ct_image": (lambda: RandLowDoseCTNoise(dose_fraction=(0.2, 0.6), spacing=(1.0, 1.0), domain="image"), phantom_ct),
    "mr": (lambda: RandRicianMRNoise(std=(0.02, 0.08), num_coils=2), phantom_mr),
}


@pytest.mark.parametrize("name", sorted(ARRAY_TRANSFORMS))
def test_array_transforms_repeat_under_set_random_state(name):
    make, image = ARRAY_TRANSFORMS[name]
    img = image()
    runs = []
    for seed in (7, 7, 8):
        t = make().set_random_state(seed)
        runs.append((t(img), t(img)))  # two consecutive calls: the state advances
    assert same(runs[0][0], runs[1][0]) and same(runs[0][1], runs[1][1])
    assert not same(runs[0][0], runs[0][1]) and not same(runs[0][0], runs[2][0])
    # numpy in, numpy out, with the same numbers
    out_np = make().set_random_state(7)(img.numpy())
    assert isinstance(out_np, np.ndarray) and same(out_np, runs[0][0])


@pytest.mark.parametrize(
    "make, image",
    [
        (lambda: RandLowDoseCTNoised(["a", "b"], dose_fraction=(0.2, 0.6), num_views=60), lambda: phantom_ct(depth=2)),
        (lambda: RandRicianMRNoised(["a", "b"], std=(0.02, 0.08)), lambda: phantom_mr((1, 16, 16, 4))),
    ],
    ids=["ct", "mr"],
)
def test_dictionary_transforms_repeat_under_set_random_state(make, image):
    img = MetaTensor(image(), affine=torch.diag(torch.tensor([0.8, 0.8, 1.0, 1.0])))  # CT reads the spacing from it
    outs = [Compose([make()]).set_random_state(seed)({"a": img, "b": img.clone()}) for seed in (1, 1, 2)]
    assert same(outs[0]["a"], outs[1]["a"]) and same(outs[0]["b"], outs[1]["b"])
    assert not same(outs[0]["a"], outs[0]["b"])  # independent noise per key
    assert not same(outs[0]["a"], outs[2]["a"])
    assert torch.equal(outs[0]["a"].affine, img.affine)


def test_dataloader_workers_repeat_under_set_determinism():
    """MONAI's DataLoader reseeds every worker's transforms from the global seed."""
    data = [{"image": phantom_mr((1, 16, 16))} for _ in range(4)]
    transform = RandRicianMRNoised("image", std=(0.02, 0.08))

    def epoch(seed: int) -> torch.Tensor:
        set_determinism(seed)
        loader = DataLoader(Dataset(data, transform), batch_size=2, num_workers=2, shuffle=True)
        return torch.cat([b["image"] for b in loader])

    first, second, other = epoch(0), epoch(0), epoch(1)
    assert same(first, second) and not same(first, other)


# ---------------------------------------------------------------------------------------------
# degradation operators with a torch.Generator
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "op, image",
    [
        (CTDegradation(spacing=(1.0, 1.0), num_views=60), lambda: phantom_ct((2, 1))),
        (CTDegradation(spacing=(1.0, 1.0), i0="estimate", domain="image"), lambda: phantom_ct((2, 1)) + 10 * torch.randn(2, 1, 32, 32)),
        (MRDegradation(reference_std=0.02, num_coils=4), lambda: phantom_mr((2, 1, 8, 8, 8))),
        (MRDegradation(), lambda: torch.nn.functional.pad(phantom_mr((2, 1, 16, 16)), (4, 4, 4, 4)).abs() + 0.01 * torch.rand(2, 1, 24, 24)),
    ],
    ids=["ct_projection", "ct_image_estimated_i0", "mr_4_coils", "mr_estimated_std"],
)
def test_degradation_operators_repeat_with_a_generator(op, image):
    x, dt = image(), torch.tensor([0.1, 0.5])
    a = op(x, dt, generator=torch.Generator().manual_seed(11))
    b = op(x, dt, generator=torch.Generator().manual_seed(11))
    c = op(x, dt, generator=torch.Generator().manual_seed(12))
    assert same(a, b) and not same(a, c)


# ---------------------------------------------------------------------------------------------
# inferers
# ---------------------------------------------------------------------------------------------
def test_flow_inferer_sampling_repeats_from_a_seed():
    net = tiny_net()
    inferer = FlowInferer(num_steps=3, solver="heun")
    with torch.no_grad():
        a = inferer.sample(net, (2, 1, 16, 16), seed=5)
        b = inferer.sample(tiny_net(), (2, 1, 16, 16), seed=5)  # same init seed: same weights
        c = inferer.sample(net, (2, 1, 16, 16), seed=6)
        torch.use_deterministic_algorithms(True)  # no nondeterministic kernel on this path
        d = inferer.sample(net, (2, 1, 16, 16), seed=5)
    assert same(a, b) and same(a, d) and not same(a, c)


def test_relative_flow_inferer_is_a_deterministic_function():
    net = tiny_net()
    noisy = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    fixed = RelativeFlowInferer((0.2, 0.1, 0.05))
    auto = RelativeFlowInferer("auto", noise_estimator=lambda x: x.flatten(1).std(1), target_std=0.05)
    with torch.no_grad():
        for inferer in (fixed, auto):
            a, b = inferer(noisy, net), inferer(noisy.clone(), tiny_net())
            assert same(a, b) and not same(a, noisy)


@pytest.mark.parametrize("strategy", ["per_step", "per_window"])
def test_sliding_window_inferer_repeats(strategy):
    net = tiny_net(3)
    volume = torch.rand(1, 1, 20, 20, 12, generator=torch.Generator().manual_seed(1))
    sw = SlidingWindowFlowInferer(RelativeFlowInferer((0.2, 0.1)), roi_size=(8, 8, 8), sw_batch_size=3, overlap=0.5, strategy=strategy)
    with torch.no_grad():
        a, b = sw(volume, net), sw(volume.clone(), tiny_net(3))
        g = SlidingWindowFlowInferer(FlowInferer(num_steps=2), roi_size=(8, 8, 8), sw_batch_size=3, strategy=strategy)
        noise = lambda seed: torch.randn(1, 1, 20, 20, 12, generator=torch.Generator().manual_seed(seed))  # noqa: E731
        c, d = g(noise(0), net), g(noise(0), net)
    assert same(a, b) and same(c, d) and not same(a, volume)


# ---------------------------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------------------------
def train_once(seed: int) -> tuple[list[float], dict[str, torch.Tensor]]:
    """Two epochs of RelativeFlow on a shuffled, augmented toy set, everything seeded by ``seed``."""
    set_determinism(seed)  # global torch / numpy / random seeds: weights init and the shuffle order
    images = [{"image": phantom_mr((1, 16, 16)) * (1 + 0.1 * i)} for i in range(6)]
    augment = RandRicianMRNoised("image", std=(0.01, 0.03))  # seeded by set_determinism too
    loader = DataLoader(Dataset(images, augment), batch_size=2, shuffle=True, num_workers=0)
    net = VelocityUNet(2, channels=(8, 8), attention_levels=(False, False), num_res_blocks=1, norm_num_groups=8)
    objective = RelativeFlow(MRDegradation(reference_std=0.02), DtCurriculum(), seed=seed)
    trainer = FlowTrainer("cpu", 2, loader, net, torch.optim.AdamW(net.parameters(), 1e-3), objective)
    losses: list[float] = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: losses.append(float(e.state.output[0]["loss"])))
    trainer.run()
    return losses, {k: v.clone() for k, v in net.state_dict().items()}


def test_two_identical_training_runs_give_the_same_losses_and_weights():
    losses_a, weights_a = train_once(0)
    losses_b, weights_b = train_once(0)
    losses_c, weights_c = train_once(1)
    assert len(losses_a) == 6 and losses_a == losses_b  # exact float equality
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)
    assert losses_a != losses_c and not all(torch.equal(weights_a[k], weights_c[k]) for k in weights_a)
