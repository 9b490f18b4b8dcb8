"""The measured quality-time calibration (what a network removes along the ``auto`` schedule) and
``auto`` using it to reach its target."""

import math

import pytest
import torch

from monai_flow.inferers import QualityTimeCalibration, RelativeFlowInferer, calibration_path, measure_quality_time

SIZE, MAX_DT, MIN_DT = 48, 0.6, 0.05


def disk(batch=1):
    """(B, 1, SIZE, SIZE): a bright disk with a gentle ramp on a dark background."""
    y, x = torch.meshgrid(torch.linspace(-1, 1, SIZE), torch.linspace(-1, 1, SIZE), indexing="ij")
    image = torch.where(x**2 + y**2 < 0.6, 1.0 + 0.1 * x, 0.0)
    return image.expand(batch, 1, SIZE, SIZE).clone()


class SlowDenoiser(torch.nn.Module):
    """Knows the clean image; an Euler step of dt multiplies the noise ``x - clean`` by ``e^{-eta dt}``:
    with ``eta < 1`` it removes less than the ``e^{-dt}`` the uncalibrated ``auto`` assumes."""

    def __init__(self, clean, eta):
        super().__init__()
        self.clean, self.eta = clean, eta

    def forward(self, x, dt):
        dt = torch.as_tensor(dt, dtype=x.dtype).reshape(-1, 1, 1, 1)
        rate = torch.where(dt > 0, -torch.expm1(-self.eta * dt) / torch.expm1(dt).clamp_min(1e-12), 0.0)
        return -rate * (x - self.clean)  # dt = 0 (a finished sample's padding step): no update


def noise_std(x, clean):
    return (x - clean).flatten(1).std(dim=1)


def gaussian_scan(std):
    def scan(clean, reference, generator, noise_scale=1.0):
        return clean + noise_scale * std * torch.randn(clean.shape, generator=generator)
    return scan


def test_measured_gap_is_the_networks_speed_times_the_nominal_gap():
    """The two scans' noise shrinks by exactly e^{-eta G} along any schedule of total G: the measurement
    must recover eta G, whatever the schedule's steps (and it must not share the reference's own noise)."""
    clean = disk(2)
    net = SlowDenoiser(clean, eta=0.55)
    references = clean + 0.1 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(10))
    gaps = (0.25, 0.5, 1.0, 2.0, 3.0)
    cal = measure_quality_time(net, [references], gaussian_scan(0.1), MAX_DT, MIN_DT, nominal_gaps=gaps,
                               noise_scales=(1.0, 2.0), progress=False)
    assert cal.nominal == (0.0, *gaps)
    assert len(cal.effective) == len(cal.noise) == 4  # 2 samples x 2 noise scales
    for row in cal.effective:
        assert row == pytest.approx([0.55 * g for g in cal.nominal], abs=1e-4)
    assert cal.noise == pytest.approx([0.1, 0.1, 0.2, 0.2], rel=0.1)  # the scans' noise, measured
    assert (cal.max_dt, cal.min_dt) == (MAX_DT, MIN_DT)


@pytest.mark.parametrize("bias", [1.0, 1.1])
def test_calibrated_auto_reaches_its_target_where_the_uncalibrated_one_misses(bias):
    """On new scans at several noise levels, ``auto`` with the measured calibration lands within 2 % of
    the target; without it the slow network stops at e^{(1 - eta) gap} times the target. An estimator that
    reads ``bias`` times the noise is absorbed when the calibration is measured with it."""
    clean = disk(3)
    net = SlowDenoiser(clean, eta=0.6)

    def estimator(x):
        return bias * noise_std(x, clean)

    references = clean + 0.2 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(10))
    # cleaned far enough that the estimator does not see their residual noise (e^{-3.6} x 0.2)
    cal = measure_quality_time(net, [references], gaussian_scan(0.2), MAX_DT, MIN_DT, noise_estimator=estimator,
                               clean_gap=6.0, noise_scales=(0.5, 1.5), progress=False)
    levels, target = torch.tensor([0.1, 0.2, 0.3]).reshape(-1, 1, 1, 1), 0.04
    noisy = clean + levels * torch.randn(clean.shape, generator=torch.Generator().manual_seed(2))
    settings = dict(noise_estimator=estimator, target_std=target, max_dt=MAX_DT, min_dt=MIN_DT)
    reached = noise_std(RelativeFlowInferer("auto", calibration=cal, **settings)(noisy, net), clean)
    assert reached / target == pytest.approx(torch.ones(3), rel=0.02)
    missed = noise_std(RelativeFlowInferer("auto", **settings)(noisy, net), clean) / target
    assert torch.all(missed > 1.2), missed


def single(nominal, effective, noise=1.0):
    return QualityTimeCalibration(tuple(nominal), (noise,), (tuple(effective),), MAX_DT, MIN_DT)


def test_inverse_of_a_saturating_curve_and_its_envelope():
    nominal = torch.linspace(0, 4, 81).tolist()
    cal = single(nominal, [1.5 * (1 - math.exp(-g / 1.5)) for g in nominal])
    for gap in (0.1, 0.7, 1.2):
        assert cal.nominal_gap(gap) == pytest.approx(-1.5 * math.log(1 - gap / 1.5), abs=0.01)
    assert cal.nominal_gap(0.0) == 0.0 and cal.nominal_gap(-1.0) == 0.0
    # a dip (measurement noise) is bridged by the running maximum; beyond the reach: the nominal gap that reached it
    bumpy = single((0.0, 1.0, 2.0, 3.0), (0.0, 0.3, 0.25, 0.6))
    assert bumpy.nominal_gap(0.15) == pytest.approx(0.5)
    assert bumpy.nominal_gap(0.45) == pytest.approx(2.0)
    assert bumpy.reach() == 0.6 and bumpy.nominal_gap(5.0) == pytest.approx(3.0)


def test_removal_depends_on_the_input_noise_as_measured():
    """Points at noise 10 and 40 removing 0.8 and 0.6 at G = 1: a line in ln(noise) between them (0.7 at 20),
    held constant outside; several points at one level are averaged."""
    cal = QualityTimeCalibration((0.0, 1.0), (10.0, 40.0, 40.0), ((0.0, 0.8), (0.0, 0.55), (0.0, 0.65)), MAX_DT, MIN_DT)
    assert cal.curve(20.0)[1] == pytest.approx(0.7)
    assert cal.curve(5.0)[1] == pytest.approx(0.8) and cal.curve(80.0)[1] == pytest.approx(0.6)
    assert cal.nominal_gap(0.35, 20.0) == pytest.approx(0.5) and cal.nominal_gap(0.3, 40.0) == pytest.approx(0.5)


def test_auto_reads_the_calibration_at_each_samples_noise():
    """Two samples at noise 0.1 and 0.4, where the network removed 1.0 and 2.0 at G = 1: each gets the nominal
    gap of its own line (0.5 and 0.943), not that of the points' mean noise (0.333 and 1.257)."""
    cal = QualityTimeCalibration((0.0, 1.0), (0.1, 0.4), ((0.0, 1.0), (0.0, 2.0)), MAX_DT, MIN_DT)
    target = 0.1 * math.exp(-0.5)
    inferer = RelativeFlowInferer("auto", noise_estimator=lambda x: torch.tensor([0.1, 0.4]), target_std=target,
                                  max_dt=MAX_DT, min_dt=MIN_DT, calibration=cal)
    totals = inferer.dt_table(torch.zeros(2, 1, 8, 8)).sum(dim=1)
    assert totals.tolist() == pytest.approx([0.5, math.log(0.4 / target) / 2.0])


def test_save_load_round_trip_and_bad_files(tmp_path):
    cal = QualityTimeCalibration((0.0, 0.5, 1.0), (0.02, 0.04), ((0.0, 0.45, 0.8), (0.0, 0.4, 0.7)), MAX_DT, MIN_DT)
    path = calibration_path(tmp_path / "models" / "model.pt")
    assert path.name == "model.quality_time.json"
    cal.save(path)
    assert QualityTimeCalibration.load(path) == cal == QualityTimeCalibration.load_if_present(path)
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left
    assert QualityTimeCalibration.load_if_present(tmp_path / "missing.json") is None
    bad = tmp_path / "bad.quality_time.json"
    bad.write_text('{"nominal": [0, 1]}')
    with pytest.raises(ValueError, match="bad.quality_time.json.*not a quality-time calibration"):
        QualityTimeCalibration.load(bad)


@pytest.mark.parametrize(
    "nominal, effective, match",
    [((0.5, 1.0), (0.0, 0.4), "increase from 0"), ((0.0, 1.0, 0.5), (0.0, 0.4, 0.5), "increase from 0"),
     ((0.0, 1.0), (0.0,), "same lengths"), ((0.0, 1.0), (0.0, float("nan")), "finite")],
)
def test_bad_calibrations_are_refused(nominal, effective, match):
    with pytest.raises(ValueError, match=match):
        single(nominal, effective)
    with pytest.raises(ValueError, match="noise > 0"):
        single((0.0, 1.0), (0.0, 0.5), noise=0.0)


def test_inferer_checks_its_calibration():
    cal = single((0.0, 1.0, 2.0), (0.0, 0.6, 1.0))
    settings = dict(noise_estimator=lambda x: x.flatten(1).std(dim=1), target_std=0.01)
    with pytest.raises(ValueError, match="QualityTimeCalibration"):
        RelativeFlowInferer("auto", calibration={"nominal": [0, 1]}, max_dt=MAX_DT, min_dt=MIN_DT, **settings)
    with pytest.warns(UserWarning, match="measured with max_dt=0.6.*used with max_dt=0.2"):
        RelativeFlowInferer("auto", calibration=cal, max_dt=0.2, min_dt=MIN_DT, **settings)
    inferer = RelativeFlowInferer("auto", calibration=cal, max_dt=MAX_DT, min_dt=MIN_DT, **settings)
    noisy = torch.randn(1, 1, 8, 8, generator=torch.Generator().manual_seed(0))  # std ~1: asks e^{4.6}
    with pytest.warns(UserWarning, match="measured at most 2.72"):
        table = inferer.dt_table(noisy)
    assert float(table.sum()) == pytest.approx(2.0)  # as far as the calibrated reach


def test_ct_rescan_has_the_noise_of_the_reference():
    """A rescan of the noise-free body at the reference's (estimated) dose has the reference's noise std."""
    from monai_flow.physics import CTScan, low_dose_ct_noise
    from monai_flow.transforms import CTDegradation, NormalizedDegradation

    y, x = torch.meshgrid(torch.arange(96.0) - 47.5, torch.arange(96.0) - 47.5, indexing="ij")
    water = torch.where(x**2 + y**2 < 40**2, 0.0, -1000.0).expand(8, 1, 96, 96).clone()
    scan = CTScan(i0=1e5, electronic_std=0.0, num_views=360)
    reference = water + low_dose_ct_noise(water, 1.0, (2.0, 2.0), scan, input_noise="none",
                                          generator=torch.Generator().manual_seed(3))
    op = CTDegradation(spacing=(2.0, 2.0), i0="estimate", electronic_std=0.0, num_views=360)
    rescan = op.rescan(water, reference, torch.Generator().manual_seed(4))
    centre = (slice(None), 0, slice(28, 68), slice(28, 68))
    ratio = (rescan - water)[centre].std() / (reference - water)[centre].std()
    assert ratio.item() == pytest.approx(1.0, abs=0.1)
    # in normalised units, the same scan (a known photon count: the estimate's float rounding would change
    # which Poisson draws come out)
    known = op.rescan(water, reference, torch.Generator().manual_seed(4), i0=1e5)
    normalized = NormalizedDegradation(op, scale=1000.0, shift=-1000.0)
    again = normalized.rescan((water + 1000) / 1000, (reference + 1000) / 1000, torch.Generator().manual_seed(4), i0=1e5)
    torch.testing.assert_close(again * 1000 - 1000, known, atol=1e-2, rtol=0)
    with pytest.raises(ValueError, match="same shape"):
        op.rescan(water[:2], reference)
    # noise_scale s: the photon count / s^2, so the (quantum-only) noise std x s
    louder = op.rescan(water, reference, torch.Generator().manual_seed(4), i0=1e5, noise_scale=1.4) - water
    assert (louder[centre].std() / (known - water)[centre].std()).item() == pytest.approx(1.4, rel=0.05)


class MeanShrink(torch.nn.Module):
    """Pulls every pixel toward the image mean: removes noise (and flattens the image) at a fixed rate."""

    def __init__(self):
        super().__init__()
        self.rate = torch.nn.Parameter(torch.tensor(0.5))

    def forward(self, x, dt):
        return -self.rate * (x - x.mean(dim=(-2, -1), keepdim=True))


def test_calibration_handler_writes_one_point_per_reference_and_scale_and_removes_a_stale_file(tmp_path):
    from ignite.engine import Engine

    from monai_flow.engines import QualityTimeCalibrationHandler
    from monai_flow.transforms import CTDegradation, MRDegradation, NormalizedDegradation

    y, x = torch.meshgrid(torch.arange(40.0) - 19.5, torch.arange(40.0) - 19.5, indexing="ij")
    water = torch.where(x**2 + y**2 < 17**2, 1.0, 0.0)[None, None]  # (HU + 1000) / 1000
    batches = [{"image": water + 0.02 * torch.randn(water.shape, generator=torch.Generator().manual_seed(k)),
                "spacing": torch.tensor([[2.0, 2.0]])} for k in range(2)]
    degradation = NormalizedDegradation(CTDegradation(spacing=None, i0="estimate", electronic_std=0.0, num_views=90),
                                        scale=1000.0, shift=-1000.0)
    out = tmp_path / "model.quality_time.json"
    handler = QualityTimeCalibrationHandler(batches, degradation, str(out), MAX_DT, MIN_DT, nominal_gaps=(0.5, 1.0),
                                            noise_scales=(1.0, 1.5), roi_size=(32, 32), clean_gap=0.5,
                                            degradation_keys={"spacing": "spacing"}, network=MeanShrink())
    engine = Engine(lambda e, b: None)
    handler.attach(engine)
    out.write_text("a stale calibration of other weights")
    engine.run([0], max_epochs=1)
    cal = QualityTimeCalibration.load(out)
    assert cal.nominal == (0.0, 0.5, 1.0) and len(cal.noise) == 4  # 2 references x 2 noise scales
    assert all(0 < row[1] < row[2] for row in cal.effective)  # more quality time removes more
    handler.enabled = False
    engine.run([0], max_epochs=1)  # a disabled handler (another rank) neither removes nor writes
    assert QualityTimeCalibration.load(out) == cal
    with pytest.raises(ValueError, match="rescan"):
        QualityTimeCalibrationHandler(batches, NormalizedDegradation(MRDegradation()), str(out), MAX_DT, MIN_DT)
    bad_roi = QualityTimeCalibrationHandler(batches, degradation, str(out), MAX_DT, MIN_DT, roi_size=(32, 32, 4),
                                            network=MeanShrink())
    with pytest.raises(ValueError, match="roi_size"):
        bad_roi(engine)
