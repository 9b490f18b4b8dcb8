"""The transforms inside MONAI pipelines: real DICOM, DataLoader workers, types, metadata, errors."""

import numpy as np
import pytest
import torch
from monai.data import DataLoader, Dataset, MetaTensor
from monai.transforms import (
    Compose,
    EnsureChannelFirstd,
    LoadImaged,
    RandSpatialCropd,
    ScaleIntensityRanged,
    Spacingd,
)
from pydicom.data import get_testdata_file

from monai_flow.transforms import (
    LowDoseCTNoise,
    LowDoseCTNoised,
    RandLowDoseCTNoise,
    RandLowDoseCTNoised,
    RandLowDoseCTNoiseD,
    RandRicianMRNoise,
    RandRicianMRNoised,
    RicianMRNoise,
)


def ct_pipeline():
    return Compose([
        LoadImaged("image", reader="PydicomReader"),
        EnsureChannelFirstd("image"),
        Spacingd("image", pixdim=(0.8, 0.8), mode="bilinear"),
        RandSpatialCropd("image", roi_size=(64, 64), random_size=False),
        RandLowDoseCTNoised("image", dose_fraction=(0.1, 0.5), num_views=180),
        ScaleIntensityRanged("image", a_min=-1000, a_max=1000, b_min=0.0, b_max=1.0, clip=True),
    ])


def mr_pipeline():
    return Compose([
        LoadImaged("image", reader="PydicomReader"),
        EnsureChannelFirstd("image"),
        Spacingd("image", pixdim=(0.5, 0.5), mode="bilinear"),
        ScaleIntensityRanged("image", a_min=0, a_max=4000, b_min=0.0, b_max=1.0),
        RandSpatialCropd("image", roi_size=(32, 32), random_size=False),
        RandRicianMRNoised("image", std=(0.01, 0.05), relative_to="max"),
    ])


def run_loader(pipeline, files, seed):
    ds = Dataset([{"image": f} for f in files], transform=pipeline)
    torch.manual_seed(seed)
    return [b["image"] for b in DataLoader(ds, batch_size=2, num_workers=2)]


@pytest.mark.parametrize("name,pipeline", [("CT_small.dcm", ct_pipeline), ("MR_small.dcm", mr_pipeline)])
def test_real_dicom_through_dataloader_workers_is_deterministic(name, pipeline):
    files = [get_testdata_file(name)] * 4
    first, again, other = (run_loader(pipeline(), files, s) for s in (0, 0, 1))
    for a, b in zip(first, again):
        assert torch.equal(a, b)
    assert not all(torch.equal(a, b) for a, b in zip(first, other))
    # different workers / items are not copies of each other
    assert not torch.equal(first[0][0], first[0][1])


def test_ct_metadata_and_affine_survive_the_transform():
    data = Compose([LoadImaged("image", reader="PydicomReader"), EnsureChannelFirstd("image")])(
        {"image": get_testdata_file("CT_small.dcm")}
    )
    out = LowDoseCTNoised("image", dose_fraction=0.25, num_views=180)(data)["image"]
    img = data["image"]
    assert isinstance(out, MetaTensor) and out.shape == img.shape
    assert torch.equal(out.affine, img.affine)
    assert out.meta["filename_or_obj"] == img.meta["filename_or_obj"]
    noise = out - img
    body = img > -200
    assert 5 < noise[body].std() < 200 and abs(noise[body].mean()) < 5


@pytest.mark.parametrize("kind", ["numpy", "tensor", "meta"])
def test_same_container_type_out(kind):
    base = np.full((1, 32, 32, 4), 0.0, np.float32)
    img = {"numpy": base, "tensor": torch.as_tensor(base), "meta": MetaTensor(torch.as_tensor(base))}[kind]
    for t in (RandLowDoseCTNoise(dose_fraction=(0.2, 0.3), spacing=(1.0, 1.0), num_views=90), RandRicianMRNoise()):
        out = t(img)
        assert type(out) is type(img) and out.shape == img.shape


def test_3d_ct_volume_slices_get_independent_noise():
    vol = torch.zeros(1, 48, 48, 6)
    out = LowDoseCTNoise(dose_fraction=0.2, spacing=(1.0, 1.0), num_views=120)(vol, seed=0)
    corr = np.corrcoef(out[0, ..., 0].flatten().numpy(), out[0, ..., 1].flatten().numpy())[0, 1]
    assert abs(corr) < 0.1 and out[0, ..., 0].std() > 1


def test_set_random_state_and_missing_keys():
    data = {"image": torch.zeros(1, 32, 32)}
    t = RandLowDoseCTNoiseD(["image", "label"], dose_fraction=(0.1, 0.9), spacing=(1, 1), num_views=90, allow_missing_keys=True)
    a = t.set_random_state(3)(data)["image"]
    b = t.set_random_state(3)(data)["image"]
    c = t.set_random_state(4)(data)["image"]
    assert torch.equal(a, b) and not torch.equal(a, c)
    with pytest.raises(KeyError):
        RandLowDoseCTNoised(["image", "label"], spacing=(1, 1))(data)


def test_prob_zero_leaves_the_image():
    img = torch.full((1, 16, 16), 40.0)
    assert torch.equal(RandRicianMRNoise(prob=0.0)(img), img)


@pytest.mark.parametrize(
    "build,match",
    [
        (lambda: LowDoseCTNoise(dose_fraction=0.0), "dose_fraction"),
        (lambda: LowDoseCTNoise(dose_fraction=-0.5), "dose_fraction"),
        (lambda: LowDoseCTNoise(dose_fraction=1.5), "dose_fraction"),
        (lambda: RandLowDoseCTNoise(dose_fraction=(0.5, 0.1)), "dose_fraction"),
        (lambda: LowDoseCTNoise(i0=0), "i0"),
        (lambda: LowDoseCTNoise(electronic_std=-1), "electronic_std"),
        (lambda: LowDoseCTNoise(domain="sinogram"), "domain"),
        (lambda: RicianMRNoise(std=-1.0), "std"),
        (lambda: RandRicianMRNoise(std=(-0.1, 0.2)), "std"),
    ],
)
def test_bad_parameters(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_bad_images():
    ct = LowDoseCTNoise(spacing=(1, 1), num_views=30)
    with pytest.raises(ValueError, match="channel-first"):
        ct(torch.zeros(32, 32))
    with pytest.raises(ValueError, match="channel-first"):
        RicianMRNoise()(torch.zeros(1, 1, 4, 4, 4))
    bad = torch.zeros(1, 16, 16)
    bad[0, 3, 3] = float("nan")
    for t in (ct, RicianMRNoise()):
        with pytest.raises(ValueError, match="NaN or Inf"):
            t(bad)
    with pytest.raises(ValueError, match="spacing"):
        LowDoseCTNoise()(np.zeros((1, 16, 16), np.float32))
