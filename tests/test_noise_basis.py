"""Training on patches of whole-slice degradations: CTNoiseBasisd and NoiseBasisDegradation."""

import math

import pytest
import torch
from monai.data import MetaTensor

from monai_flow.physics import CTScan, low_dose_ct_noise
from monai_flow.transforms import CTDegradation, CTNoiseBasisd, NoiseBasisDegradation


def test_basis_degradation_has_the_cot_variance_and_mixes_draws_without_changing_it():
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(4000, 1, 4, 4)
    quantum = 2.0 * torch.randn(4000, 3, 4, 4, generator=g)  # K = 3 draws of std 2
    electronic = 0.5 * torch.randn(4000, 3, 4, 4, generator=g)
    op = NoiseBasisDegradation()
    for level in (0.1, 0.4):
        y = op(x, level, torch.Generator().manual_seed(1), quantum=quantum, electronic=electronic)
        expected = math.expm1(2 * level) * 4.0 + math.expm1(4 * level) * 0.25
        assert y.var().item() == pytest.approx(expected, rel=0.03)
    # per sample: one draw or a normalised sum of two, random signs -- never the same field twice
    y1 = op(x, 0.3, torch.Generator().manual_seed(2), quantum=quantum)
    y2 = op(x, 0.3, torch.Generator().manual_seed(3), quantum=quantum)
    assert not torch.equal(y1, y2) and torch.equal(y1, op(x, 0.3, torch.Generator().manual_seed(2), quantum=quantum))
    with pytest.raises(ValueError, match="quantum"):
        op(x, 0.3, quantum=quantum[:, :, :2])


def test_noise_basis_transform_reproduces_the_direct_simulation_and_is_cacheable():
    yy, xx = torch.meshgrid(torch.arange(64.0) - 31.5, torch.arange(64.0) - 31.5, indexing="ij")
    hu = torch.where((xx / 27) ** 2 + (yy / 27) ** 2 < 1, 0.0, -1000.0)
    volume = hu[None, ..., None].expand(1, 64, 64, 16).contiguous()
    scan = CTScan(i0=2e4, electronic_std=5.0, num_views=180)
    image = MetaTensor((volume + 1000) / 1000, affine=torch.diag(torch.tensor([2.0, 2.0, 3.0, 1.0])))
    transform = CTNoiseBasisd("image", CTDegradation(num_views=180, electronic_std=5.0), 1000.0, -1000.0,
                              realizations=2, i0_key="i0", seed=3)
    out = transform({"image": image, "i0": 2e4})
    assert out["quantum"].shape == (2, 64, 64, 16) and out["quantum"].dtype == torch.float16
    assert out["i0_source"] == "given" and torch.equal(transform({"image": image, "i0": 2e4})["quantum"], out["quantum"])
    # increments at a quarter dose from the bases have the variance of the direct simulation
    level = math.log(4) / 2  # a = e^{-2 level} = 0.25
    centre = (slice(24, 40), slice(24, 40))
    x = image.as_tensor().permute(3, 0, 1, 2)  # slices as samples (16, 1, 64, 64)
    q, e = (out[k].as_tensor().permute(3, 0, 1, 2) for k in ("quantum", "electronic"))
    y = NoiseBasisDegradation()(x, level, torch.Generator().manual_seed(0), quantum=q, electronic=e)
    basis_var = ((y - x) * 1000)[..., centre[0], centre[1]].var()
    direct = low_dose_ct_noise(volume[None], 0.25, (2.0, 2.0), scan, generator=torch.Generator().manual_seed(1))
    direct_var = direct[0, 0, centre[0], centre[1]].var()
    assert (basis_var / direct_var).item() == pytest.approx(1.0, abs=0.12)
    # without a given i0 the photons are measured: a noise-free water slab has no measurable noise
    with pytest.raises(ValueError, match="no measurable noise"):
        transform({"image": image})
