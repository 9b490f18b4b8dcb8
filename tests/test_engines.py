"""Tests of monai_flow.engines: PrepareFlowBatch, FlowTrainer, CurriculumHandler, checkpoints, bundle config."""

import math
import os

import pytest
import torch
from monai.bundle import ConfigParser
from monai.data import DataLoader, Dataset
from monai.engines import IterationEvents
from monai.handlers import CheckpointLoader, CheckpointSaver, StatsHandler, from_engine

from monai_flow.engines import CurriculumHandler, FlowTrainer, PrepareFlowBatch
from monai_flow.flows import ConditionalFlowMatching, DtCurriculum, RelativeFlow


pytestmark = pytest.mark.usefixtures("single_thread")


class TinyNet(torch.nn.Module):
    """net(x, t, class_labels=None, mask=None, condition=None): a conv whose output is scaled by (1 + t)."""

    null_class = 2

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 1, 3, padding=1)
        self.emb = torch.nn.Embedding(3, 1)

    def forward(self, x, t, class_labels=None, mask=None, condition=None):
        out = self.conv(x) * (1 + t.reshape(-1, 1, 1, 1))
        if class_labels is not None:
            out = out + self.emb(class_labels).reshape(-1, 1, 1, 1)
        return out


def additive_gaussian(x, dt, generator=None):
    dt = torch.as_tensor(dt, dtype=x.dtype).reshape(-1, 1, 1, 1)
    return x + 0.1 * torch.sqrt(torch.expm1(2 * dt)) * torch.randn(x.shape, generator=generator, dtype=x.dtype)


def _loader(n=8, batch_size=4):
    g = torch.Generator().manual_seed(0)
    data = [{"image": torch.randn(1, 8, 8, generator=g), "label": i % 2, "name": f"s{i}"} for i in range(n)]
    return DataLoader(Dataset(data), batch_size=batch_size, shuffle=False, num_workers=0)


def test_prepare_flow_batch():
    batch = {"image": torch.zeros(2, 1, 4, 4, dtype=torch.float64), "label": torch.tensor([0, 1]), "name": ["a", "b"]}
    out = PrepareFlowBatch()(batch, "cpu", False, dtype=torch.float32)
    assert set(out) == {"image", "label", "name"} and out["image"].dtype == torch.float32
    assert out["name"] == ["a", "b"]
    out = PrepareFlowBatch(keys=["image"])(batch, "cpu")
    assert set(out) == {"image"}
    assert set(PrepareFlowBatch()(torch.zeros(2, 1, 4, 4))) == {"image"}
    with pytest.raises(ValueError, match="mask"):
        PrepareFlowBatch(keys=["image", "mask"])(batch)
    with pytest.raises(ValueError, match="batchdata"):
        PrepareFlowBatch()([1, 2])


def test_flow_trainer_runs_events_and_stats():
    torch.manual_seed(0)
    net = TinyNet()
    before = [p.detach().clone() for p in net.parameters()]
    logged = []
    stats = StatsHandler(
        tag_name="train_loss",
        output_transform=from_engine(["loss"], first=True),  # the usual bundle idiom
        iteration_print_logger=lambda engine: logged.append(stats.output_transform(engine.state.output)),
    )
    trainer = FlowTrainer(
        device="cpu",
        max_epochs=2,
        train_data_loader=_loader(),
        network=net,
        optimizer=torch.optim.SGD(net.parameters(), lr=0.1),
        objective=ConditionalFlowMatching(p_uncond=0.2, seed=0),
        train_handlers=[stats],
    )
    events = [getattr(IterationEvents, n) for n in ("FORWARD_COMPLETED", "LOSS_COMPLETED", "BACKWARD_COMPLETED")]
    fired = {e: 0 for e in events + [IterationEvents.MODEL_COMPLETED]}
    for e in fired:
        trainer.add_event_handler(e, lambda engine, e=e: fired.__setitem__(e, fired[e] + 1))
    losses = []
    trainer.add_event_handler(IterationEvents.LOSS_COMPLETED, lambda e: losses.append(e.state.output["loss"].item()))
    trainer.run()
    assert trainer.state.iteration == 4
    assert all(v == 4 for v in fired.values()), fired
    # decollated output as in SupervisedTrainer: one dict per sample, the scalar loss replicated
    assert isinstance(trainer.state.output, list) and len(trainer.state.output) == 4
    assert set(trainer.state.output[0]) == {"image", "loss"} and trainer.state.output[0]["image"].shape == (1, 8, 8)
    assert len(losses) == 4 and all(torch.isfinite(torch.tensor(losses)))
    assert logged == pytest.approx(losses)  # StatsHandler sees the scalar loss of every iteration
    assert any(not torch.equal(a, b) for a, b in zip(before, net.parameters()))


def test_flow_trainer_matches_manual_loop_and_accumulates():
    """One trainer epoch equals a hand-written loop with the same seeds; accumulation steps less often."""

    def make():
        torch.manual_seed(1)
        net = TinyNet()
        return net, torch.optim.SGD(net.parameters(), lr=0.05)

    net_a, opt_a = make()
    FlowTrainer("cpu", 1, _loader(), net_a, opt_a, ConditionalFlowMatching(seed=5)).run()
    net_b, opt_b = make()
    cfm = ConditionalFlowMatching(seed=5)
    for batch in _loader():
        opt_b.zero_grad()
        cfm.loss(net_b, batch).backward()
        opt_b.step()
    for a, b in zip(net_a.parameters(), net_b.parameters()):
        torch.testing.assert_close(a, b)

    net, opt = make()
    steps = []
    opt.step = (lambda f: (lambda *a, **k: (steps.append(1), f(*a, **k))[1]))(opt.step)
    FlowTrainer("cpu", 1, _loader(n=12, batch_size=2), net, opt, ConditionalFlowMatching(), accumulation_steps=4).run()
    assert len(steps) == 2  # 6 iterations: steps after iterations 4 and 6 (end of epoch)
    with pytest.raises(ValueError, match="loss_function"):
        FlowTrainer("cpu", 1, _loader(), net, opt, ConditionalFlowMatching(), loss_function=torch.nn.MSELoss())


def test_curriculum_handler_and_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    net = TinyNet()
    objective = RelativeFlow(additive_gaussian, DtCurriculum(factor=0.8), seed=0)
    saver = CheckpointSaver(
        str(tmp_path), {"net": net, "curriculum": objective.curriculum}, save_final=True, final_filename="final.pt"
    )
    trainer = FlowTrainer(
        "cpu",
        3,
        _loader(),
        net,
        torch.optim.Adam(net.parameters(), 1e-3),
        objective,
        train_handlers=[CurriculumHandler(), saver],  # None: use trainer.objective.curriculum
    )
    ranges = []
    trainer.add_event_handler(IterationEvents.MODEL_COMPLETED, lambda e: ranges.append(objective.curriculum.range))
    trainer.run()
    assert objective.curriculum.epoch == 3
    assert ranges[0] == (0.2, 0.2) and ranges[-1] == pytest.approx((0.2 * 0.8**2, 0.2 / 0.8**2))

    path = os.path.join(str(tmp_path), "final.pt")
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["curriculum"]["epoch"] == 3
    net2, cur2 = TinyNet(), DtCurriculum(factor=0.8)
    CheckpointLoader(path, {"net": net2, "curriculum": cur2})(trainer)
    assert cur2.epoch == 3 and cur2.range == objective.curriculum.range
    for a, b in zip(net.parameters(), net2.parameters()):
        torch.testing.assert_close(a, b)

    # explicit curriculum / objective arguments, and a bad one
    cur = DtCurriculum()
    handler = CurriculumHandler(RelativeFlow(additive_gaussian, cur))
    handler(trainer)
    assert cur.epoch == 1
    with pytest.raises(ValueError, match="CurriculumHandler"):
        CurriculumHandler(object()).attach(trainer)


def test_flow_trainer_from_bundle_config():
    config = {
        "imports": ["$import monai_flow"],
        "device": "cpu",
        "network": {
            "_target_": "monai.networks.nets.DiffusionModelUNet",
            "spatial_dims": 2,
            "in_channels": 1,
            "out_channels": 1,
            "channels": [8, 8],
            "attention_levels": [False, False],
            "num_res_blocks": 1,
            "norm_num_groups": 8,
        },
        "objective": {
            "_target_": "monai_flow.flows.ConditionalFlowMatching",
            "time_sampling": "logit_normal",
            "ot_coupling": True,
            "seed": 0,
        },
        "optimizer": {"_target_": "torch.optim.Adam", "params": "$@network.parameters()", "lr": 1e-3},
        "train_dataset": {
            "_target_": "Dataset",
            "data": "$[{'image': torch.randn(1, 8, 8)} for _ in range(4)]",
        },
        "train_loader": {"_target_": "DataLoader", "dataset": "@train_dataset", "batch_size": 2},
        "trainer": {
            "_target_": "monai_flow.engines.FlowTrainer",
            "device": "@device",
            "max_epochs": 1,
            "train_data_loader": "@train_loader",
            "network": "@network",
            "optimizer": "@optimizer",
            "objective": "@objective",
            "train_handlers": [{"_target_": "monai_flow.engines.CurriculumHandler", "curriculum": "$None"}],
        },
    }
    parser = ConfigParser(config)
    # CurriculumHandler with no curriculum on a CFM trainer must refuse clearly at attach time
    with pytest.raises(RuntimeError) as err:
        parser.get_parsed_content("trainer")
    assert "CurriculumHandler needs" in str(err.value.__cause__)
    config["trainer"]["train_handlers"] = []
    trainer = ConfigParser(config).get_parsed_content("trainer")
    trainer.run()
    assert trainer.state.iteration == 2 and math.isfinite(from_engine(["loss"], first=True)(trainer.state.output))


def test_prepare_degraded_batch_is_seeded():
    from monai_flow.engines import PrepareDegradedBatch

    clean = torch.zeros(1, 1, 16, 16, 4)
    clean[..., 4:12, 4:12, :] = 0.5

    def degrade(x, level, generator=None):
        return x + level.reshape(-1, 1, 1, 1, 1) * torch.randn(x.shape, generator=generator)

    inputs, targets = PrepareDegradedBatch(degrade, 0.1, seed=3)({"image": clean}, "cpu")
    again, _ = PrepareDegradedBatch(degrade, 0.1, seed=3)({"image": clean}, "cpu")
    assert torch.equal(targets, clean) and torch.equal(inputs, again) and not torch.equal(inputs, clean)


def test_prepare_degraded_batch_repeats_its_noise_on_every_evaluator_run():
    from ignite.engine import Engine

    from monai_flow.engines import PrepareDegradedBatch

    prepare = PrepareDegradedBatch(lambda x, level, generator=None: x + torch.randn(x.shape, generator=generator), 0.1)
    seen = []
    engine = Engine(lambda e, batch: seen.append(prepare(batch, "cpu")[0]))
    prepare.attach(engine)
    data = [{"image": torch.zeros(1, 1, 4, 4)}] * 2
    engine.run(data, max_epochs=1)
    engine.run(data, max_epochs=1)
    assert torch.equal(seen[0], seen[2]) and not torch.equal(seen[0], seen[1])
