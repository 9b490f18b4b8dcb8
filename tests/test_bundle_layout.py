"""Every bundle has the files MONAI expects, the model-zoo config layout (evaluate.json and
multi_gpu_train.json as overlays on train.json), evaluation settings equal to the deployed ones, and
passes MONAI's ``verify_net_in_out`` and ``ckpt_export`` with the commands its README documents."""

from __future__ import annotations

import json
import re
import shlex
import shutil
from pathlib import Path

import fire
import pytest
import torch
from monai.bundle import ConfigParser, ckpt_export, verify_net_in_out

from bundle_helpers import BUNDLES

from monai_flow.bundle import network_example_inputs

NAMES = ["ct_denoise", "mr_denoise", "ct_restore", "motfm_generation"]
REQUIRED = ("metadata.json", "train.json", "inference.json", "evaluate.json", "multi_gpu_train.json", "logging.conf")
REPO = BUNDLES.parent

# (deployed configs, evaluation configs) that must infer the same way
PAIRS = {
    "ct_denoise": [(["inference.json"], ["train.json", "evaluate.json"])],
    "mr_denoise": [(["inference.json"], ["train.json", "evaluate.json"])],
    "ct_restore": [
        (["inference.json"], ["train.json", "evaluate.json"]),
        (["inference.json", "inference_flowmap.json"], ["train.json", "train_flowmap.json", "evaluate.json", "evaluate_flowmap.json"]),
    ],
    "motfm_generation": [
        (["inference.json"], ["train.json", "evaluate.json"]),
        (["inference.json", "train_3d.json"], ["train.json", "train_3d.json", "evaluate.json"]),
    ],
}
PAIR_IDS = [f"{name}:{'+'.join(deployed)}" for name, pairs in PAIRS.items() for deployed, _ in pairs]
PAIR_CASES = [(name, deployed, evaluated) for name, pairs in PAIRS.items() for deployed, evaluated in pairs]


def parse(name: str, files: list[str]) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config([str(BUNDLES / name / "configs" / f) for f in files])
    parser["device"] = "$torch.device('cpu')"
    return parser


@pytest.mark.parametrize("name", NAMES)
def test_bundle_files_and_metadata(name):
    root = BUNDLES / name
    for file in REQUIRED:
        assert (root / "configs" / file).is_file(), f"{name}: configs/{file}"
    assert (root / "docs" / "README.md").is_file() and (root / "LICENSE").is_file()
    meta = json.loads((root / "configs" / "metadata.json").read_text())
    for key in ("version", "changelog", "monai_version", "pytorch_version", "task", "description", "authors",
                "network_data_format", "intended_use", "limitations"):
        assert meta.get(key), f"{name}: metadata.json lacks {key}"
    assert meta["version"] in meta["changelog"]
    fmt = meta["network_data_format"]
    assert fmt["inputs"] and fmt["outputs"]
    if name == "ct_restore":
        for overlay in ("train_flowmap.json", "inference_flowmap.json", "evaluate_flowmap.json"):
            assert (root / "configs" / overlay).is_file()
    for config in root.glob("configs/*.json"):
        json.loads(config.read_text())  # valid JSON


# ------------------------------------------------------------------------------------------------
# layout: overlays hold only what differs; ordering by _requires_; one HU scale; safe loading
# ------------------------------------------------------------------------------------------------
def _flatten(config, prefix: str = "") -> dict:
    """``{id: value}`` of every leaf of a config (ids joined with ``#`` as MONAI does)."""
    if isinstance(config, dict):
        items = config.items()
    elif isinstance(config, list):
        items = enumerate(config)
    else:
        return {prefix: config}
    out = {}
    for k, v in items:
        out.update(_flatten(v, f"{prefix}#{k}" if prefix else str(k)))
    return out or {prefix: config}


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("overlay", ["evaluate.json", "multi_gpu_train.json"])
def test_overlays_hold_only_what_differs_from_train(name, overlay):
    """The overlay repeats nothing of train.json: every id it sets either is new or changes the value,
    and the multi-GPU overlay lists no handlers (they are train.json's, rank-0 ones disabled by
    ``is_main``)."""
    base = ConfigParser()
    base.read_config(str(BUNDLES / name / "configs" / "train.json"))
    content = json.loads((BUNDLES / name / "configs" / overlay).read_text())
    for key, value in content.items():
        if key.startswith("+"):
            continue
        try:
            old = base[key]
        except (KeyError, IndexError, ValueError, TypeError):
            continue  # a new id
        assert old != value, f"{overlay} repeats {key} of train.json"
    if overlay == "multi_gpu_train.json":
        assert not [k for k in content if "handlers" in k], "multi_gpu_train.json must not re-list handlers"
        assert content["is_main"] == "$torch.distributed.get_rank() == 0"
        assert base["is_main"] is True
        handlers = base["train#handlers"] + base["validate#handlers"] + base["train#checkpoint_handlers"]
        rank0 = {h["_target_"] for h in handlers if h.get("_disabled_") == "$not @is_main"}
        assert {"StatsHandler", "TensorBoardStatsHandler", "monai_flow.checkpoints.TrainingCheckpointSaver"} <= rank0
        # built on every rank: validation is distributed, and MONAI's CheckpointSaver (ignite) synchronises
        # ranks when it is built and writes from rank 0 only
        assert not rank0 & {"ValidationHandler", "CheckpointSaver", "LrScheduleHandler"}, rank0
        assert "$idist.sync()" in content["initialize"]  # ignite's distributed state, on every rank at one point
    else:
        assert len(json.dumps(content)) < len(json.dumps(base.get())) / 2, "evaluate.json is not a short overlay"


@pytest.mark.parametrize("name", NAMES)
def test_demo_data_is_ordered_by_requires(name):
    """The datalist requires the demo component instead of a ``(@demo, ...)[1]`` tuple."""
    for config in ("train.json", "inference.json"):
        content = json.loads((BUNDLES / name / "configs" / config).read_text())
        assert content["datalist"]["_requires_"] == "@demo" and "_target_" in content["demo"], config
    for config in (BUNDLES / name / "configs").glob("*.json"):
        assert "(@demo," not in config.read_text(), config


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("config", ["train.json", "inference.json"])
def test_the_datalist_waits_for_the_demo_it_requires(name, config, tmp_path, monkeypatch):
    """Resolving ``datalist`` first builds the demo data (``_requires_``) when the dataset is the demo
    folder, and never touches the demo otherwise."""
    import nibabel as nib
    import numpy as np

    import monai_flow.data

    calls = []

    def fake_demo(kind, demo_dir, **kwargs):  # a one-image demo folder, as prepare_demo_data leaves it
        calls.append(kind)
        image = Path(demo_dir) / "images" / "a.nii.gz"
        image.parent.mkdir(parents=True)
        nib.save(nib.Nifti1Image(np.ones((8, 8, 8), np.float32), np.eye(4)), str(image))
        item = {"image": "images/a.nii.gz", "mask": "images/a.nii.gz", "label": 0}
        (Path(demo_dir) / "datalist.json").write_text(json.dumps({k: [item] for k in ("training", "validation", "testing")}))

    monkeypatch.setattr(monai_flow.data, "prepare_demo_data", fake_demo)
    root = tmp_path / name
    shutil.copytree(BUNDLES / name / "configs", root / "configs")
    for elsewhere in (False, True):
        parser = ConfigParser()
        parser.read_config(str(root / "configs" / config))
        parser["bundle_root"] = str(root)
        if elsewhere:  # the user's data: no demo
            data = tmp_path / "user_data"
            shutil.copytree(root / "demo", data, dirs_exist_ok=True)
            parser["dataset_dir" if config == "train.json" or name == "motfm_generation" else "input_path"] = str(data)
        datalist = parser.get_parsed_content("datalist")
        assert datalist, config
        assert len(calls) == 1, (elsewhere, calls)  # built once, by the default (demo) run only
        assert (root / "demo" / "images" / "a.nii.gz").is_file()


CT_SCALE_IDS = {"hu_scale", "hu_offset", "window_hu#0", "window_hu#1"}


@pytest.mark.parametrize("name", ["ct_denoise", "ct_restore"])
def test_one_config_id_for_the_hu_scale(name):
    """No config of a CT bundle writes the HU <-> network-units scale (1000, -1000 HU) but hu_scale,
    hu_offset (and the HU window)."""
    for config in (BUNDLES / name / "configs").glob("*.json"):
        if config.name == "metadata.json":
            continue
        for key, value in _flatten(json.loads(config.read_text())).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) == 1000:
                assert key in CT_SCALE_IDS, f"{config.name}: {key} = {value}"
            if isinstance(value, str) and value.startswith("$"):
                assert not re.search(r"(?<![\w.])1000(\.0*)?(?![\w.])", value), f"{config.name}: {key} = {value}"


def test_weights_are_loaded_only_by_the_safe_loader():
    """``torch.load`` appears in monai_flow/checkpoints only; bundle configs load weights with
    ``load_network_weights`` or MONAI's CheckpointLoader (which reads with ``weights_only=True``)."""
    hits = []
    for path in list(BUNDLES.rglob("*.json")) + list((REPO / "monai_flow").rglob("*.py")):
        if "torch.load" in path.read_text():
            hits.append(path.relative_to(REPO).as_posix())
    assert hits and all(h.startswith("monai_flow/checkpoints/") for h in hits), hits
    import inspect

    from monai.handlers import CheckpointLoader

    assert "weights_only=True" in inspect.getsource(CheckpointLoader.__call__)


@pytest.mark.parametrize("name", NAMES)
def test_resume_restores_the_whole_training_state(name):
    """A rerun loads the newest training checkpoint (MONAI's CheckpointLoader, ``weights_only=True``)
    into the model, optimizer, scheduler, objective (curriculum) and trainer, the objects the saver
    writes; inference loads model.pt with the same loader and evaluation with ``load_network_weights``."""
    train = json.loads((BUNDLES / name / "configs" / "train.json").read_text())
    assert list(train["checkpoint_dict"]) == ["model", "optimizer", "lr_scheduler", "objective", "trainer"]
    loader, saver = train["train"]["checkpoint_handlers"]
    assert loader["_target_"] == "CheckpointLoader" and loader["load_dict"] == "@checkpoint_dict"
    assert loader["load_path"] == "@resume_checkpoint" and saver["save_dict"] == "@checkpoint_dict"
    inference = json.loads((BUNDLES / name / "configs" / "inference.json").read_text())
    assert [h["_target_"] for h in inference["handlers"]][0] == "CheckpointLoader"
    evaluate = json.loads((BUNDLES / name / "configs" / "evaluate.json").read_text())
    assert evaluate["load_weights"].startswith("$monai_flow.checkpoints.load_network_weights(")


# ------------------------------------------------------------------------------------------------
# evaluate.json measures what inference.json deploys
# ------------------------------------------------------------------------------------------------
IGNORED_ATTRIBUTES = {"progress"}  # progress bars do not change results


def settings(obj, depth: int = 0):
    """A comparable description of an inferer: its attributes, recursively (noise estimators by the
    method and the settings of the operator they belong to)."""
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if isinstance(obj, (int, float, str, bool, type(None))):
        return obj
    if isinstance(obj, (list, tuple)):
        return [settings(v, depth) for v in obj]
    if isinstance(obj, dict):
        return {k: settings(v, depth) for k, v in obj.items()}
    if hasattr(obj, "__self__") and hasattr(obj, "__func__"):  # a bound method, e.g. estimate_noise_std
        return {"method": obj.__func__.__qualname__, "of": settings(obj.__self__, depth + 1)}
    if depth > 6 or not hasattr(obj, "__dict__"):
        return type(obj).__qualname__
    return {"type": type(obj).__qualname__,
            **{k: settings(v, depth + 1) for k, v in vars(obj).items() if k not in IGNORED_ATTRIBUTES and not k.startswith("_")}}


def _plain(value) -> bool:
    if isinstance(value, str):
        return not value.startswith(("$", "@", "%"))
    if isinstance(value, list):
        return all(_plain(v) for v in value)
    return not isinstance(value, dict)


def _example_batch(name: str, network) -> tuple[torch.Tensor, dict]:
    """An input on which both inferers run (volumes for the slice-wise CT networks) and its kwargs."""
    torch.manual_seed(0)
    if name in ("ct_denoise", "ct_restore"):
        return 1.0 + 0.05 * torch.randn(1, 1, 32, 32, 2), {}  # soft tissue with noise, (HU + 1000) / 1000
    if name == "mr_denoise":
        x = torch.zeros(1, 1, 32, 32, 32)
        x[..., 8:24, 8:24, 8:24] = 1.0
        return (x + 0.01 * torch.randn_like(x)).abs(), {}  # a bright cube in air, Rician-like noise
    ex = network_example_inputs(network, batch=1, size=8 if network.spatial_dims == 3 else 16)  # small: 50 guided steps
    return ex["x"], {"class_labels": torch.tensor([1]), "mask": ex["mask"]}


@pytest.mark.parametrize(("name", "deployed", "evaluated"), PAIR_CASES, ids=PAIR_IDS)
def test_evaluation_uses_the_deployed_inference_settings(name, deployed, evaluated, single_thread):
    """The evaluation configs measure what inference.json deploys: same network definition, same
    inferer (steps, schedule, target noise, dt limits, noise estimator and its operator), same
    shared settings; and, with the same weights, the same output on the same input."""
    infer, evaluate = parse(name, deployed), parse(name, evaluated)

    # every plain setting both define is equal (batch_size only batches generation)
    shared = [k for k in infer.get() if k in evaluate.get() and k != "batch_size"
              and _plain(infer[k]) and _plain(evaluate[k])]
    assert shared
    for key in shared:
        assert infer[key] == evaluate[key], f"{key}: {deployed} {infer[key]!r} != {evaluated} {evaluate[key]!r}"

    inferer_a, inferer_b = infer.get_parsed_content("inferer"), evaluate.get_parsed_content("inferer")
    assert settings(inferer_a) == settings(inferer_b)

    torch.manual_seed(0)
    net_a = infer.get_parsed_content("network_def")
    torch.manual_seed(0)
    net_b = evaluate.get_parsed_content("network_def")
    shapes = {k: v.shape for k, v in net_a.state_dict().items()}
    assert shapes == {k: v.shape for k, v in net_b.state_dict().items()}
    with torch.no_grad():  # nonzero velocities: a zero network would hide every difference of schedule
        for p in net_a.parameters():
            p.add_(0.05 * torch.randn_like(p))
    net_b.load_state_dict(net_a.state_dict())
    network_a, network_b = infer.get_parsed_content("network").eval(), evaluate.get_parsed_content("network").eval()
    x, kwargs = _example_batch(name, net_a)
    with torch.no_grad():
        out_a, out_b = inferer_a(x, network_a, **kwargs), inferer_b(x, network_b, **kwargs)
    assert not torch.equal(out_a, x)
    torch.testing.assert_close(out_a, out_b, rtol=1e-5, atol=1e-6)


def test_settings_see_a_changed_inference_setting():
    """The comparison above fails when one config changes a setting the other keeps."""
    infer, evaluate = parse("ct_denoise", ["inference.json"]), parse("ct_denoise", ["train.json", "evaluate.json"])
    evaluate["max_dt"] = 0.3
    assert settings(infer.get_parsed_content("inferer")) != settings(evaluate.get_parsed_content("inferer"))
    infer, evaluate = parse("mr_denoise", ["inference.json"]), parse("mr_denoise", ["train.json", "evaluate.json"])
    evaluate["noise_estimator"] = "$monai_flow.transforms.MRDegradation(num_coils=8).estimate_noise_std"
    assert settings(infer.get_parsed_content("inferer")) != settings(evaluate.get_parsed_content("inferer"))


# ------------------------------------------------------------------------------------------------
# MONAI's verify_net_in_out and ckpt_export, run as each README documents them
# ------------------------------------------------------------------------------------------------
def readme_commands(name: str, tool: str) -> list[list[str]]:
    """The ``python -m monai.bundle <tool> ...`` commands of the bundle's README, as argument lists."""
    text = (BUNDLES / name / "docs" / "README.md").read_text().replace("\\\n", " ")
    return [shlex.split(line.strip())[3:] for line in text.splitlines()
            if line.strip().startswith(f"python -m monai.bundle {tool} ")]


def monai_bundle(args: list[str]) -> None:
    """``python -m monai.bundle ARGS`` in this process (the same ``fire`` parsing of the arguments)."""
    fire.Fire({"verify_net_in_out": verify_net_in_out, "ckpt_export": ckpt_export}, command=args, name="monai.bundle")


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    """A repository-like folder (``bundles/<name>/configs``) as the working directory of the commands."""
    for name in NAMES:
        shutil.copytree(BUNDLES / name / "configs", tmp_path / "bundles" / name / "configs")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _config_files(args: list[str]) -> list[str]:
    value = args[args.index("--config_file") + 1]
    return list(eval(value)) if value.startswith("[") else [value]  # noqa: S307 (a README string literal)


@pytest.mark.parametrize("name", NAMES)
def test_readme_verify_net_in_out(name, mirror, single_thread):
    commands = readme_commands(name, "verify_net_in_out")
    assert commands, f"{name}/docs/README.md documents no verify_net_in_out command"
    for args in commands:
        assert "--extra_forward_args" in args  # the time input has no default
        monai_bundle(args + ["--device", "cpu"])
        without_t = args[: args.index("--extra_forward_args")] + args[args.index("--extra_forward_args") + 2 :]
        with pytest.raises(TypeError, match="'t'"):  # no silent default time
            monai_bundle(without_t + ["--device", "cpu"])


@pytest.mark.parametrize("name", NAMES)
def test_readme_ckpt_export_reproduces_the_network(name, mirror, single_thread):
    """ckpt_export of traced_network_def loads every weight of the checkpoint and the TorchScript file
    computes what the eager network computes, on inputs of another batch and spatial size than the
    tracing example."""
    commands = readme_commands(name, "ckpt_export")
    assert commands, f"{name}/docs/README.md documents no ckpt_export command"
    for args in commands:
        ckpt, out = Path(args[args.index("--ckpt_file") + 1]), Path(args[args.index("--filepath") + 1])
        parser = ConfigParser()
        parser.read_config(_config_files(args))
        torch.manual_seed(1)
        net = parser.get_parsed_content("network_def").eval()
        fresh = {k: v.clone() for k, v in net.state_dict().items()}
        with torch.no_grad():
            for p in net.parameters():
                p.add_(0.05 * torch.randn_like(p))  # weights the exported file can only have from the checkpoint
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        torch.save(net.state_dict(), ckpt)
        monai_bundle(args)

        exported = torch.jit.load(str(out))
        extra = {"metadata.json": "", "inference.json": ""}
        torch.jit.load(str(out), _extra_files=extra)
        assert json.loads(extra["metadata.json"])["network_data_format"] and json.loads(extra["inference.json"])
        inputs = network_example_inputs(net, batch=3, size=8 * net.spatial_divisor, seed=5)
        with torch.no_grad():
            expected = net(**inputs)
            torch.testing.assert_close(exported(*inputs.values()), expected, rtol=1e-4, atol=1e-5)
            net.load_state_dict(fresh)
            assert not torch.allclose(net(**inputs), expected, atol=1e-3)  # the checkpoint made the difference


@pytest.mark.parametrize("name", NAMES)
def test_metadata_declares_the_network_inputs(name):
    """``network_data_format.inputs`` names the arguments of ``network_def.forward`` in order: the image,
    the time ``t`` and, for MOTFM, the class labels and the mask (the flow-map variant of ct_restore in
    ``flowmap_network_data_format``)."""
    meta = json.loads((BUNDLES / name / "configs" / "metadata.json").read_text())
    variants = [("network_data_format", ["inference.json"])]
    if name == "ct_restore":
        variants.append(("flowmap_network_data_format", ["inference.json", "inference_flowmap.json"]))
    for key, configs in variants:
        declared = list(meta[key]["inputs"])
        net = parse(name, configs).get_parsed_content("network_def")
        assert declared == ["image"] + list(network_example_inputs(net))[1:], (key, declared)
        assert meta[key]["inputs"]["t"]["spatial_shape"] == [] and meta[key]["inputs"]["t"]["dtype"] == "float32"
        assert meta[key]["inputs"]["image"]["num_channels"] == net.in_channels
        assert len(meta[key]["inputs"]["image"]["spatial_shape"]) == net.spatial_dims


def _run_commands(text: str) -> list[list[str]]:
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            if "monai.bundle run" in line:
                commands.append(shlex.split(line, comments=True))
    return commands


@pytest.mark.parametrize("doc", ["README.md"] + [f"bundles/{n}/docs/README.md" for n in NAMES])
def test_documented_bundle_runs_name_existing_configs_and_keys(doc):
    """Every ``python -m monai.bundle run`` command of the READMEs names configs that exist (from the
    repository root, or the bundle folder for ``configs/...``) and overrides ids the merged config has;
    evaluate.json and multi_gpu_train.json are only ever run as overlays on train.json."""
    path = REPO / doc
    commands = _run_commands(path.read_text())
    assert commands
    for args in commands:
        value = args[args.index("--config_file") + 1]
        files = list(eval(value)) if value.startswith("[") else [value]  # noqa: S307 (a literal in our docs)
        base = REPO if (REPO / files[0]).is_file() else path.parent.parent
        assert all((base / f).is_file() for f in files), (doc, files)
        names = [Path(f).name for f in files]
        for overlay in ("evaluate.json", "multi_gpu_train.json", "evaluate_flowmap.json", "train_flowmap.json"):
            if overlay in names:
                assert names[0] == "train.json", (doc, names)
        parser = ConfigParser()
        parser.read_config([str(base / f) for f in files])
        keys = [a[2:] for a in args if a.startswith("--") and a not in ("--config_file",) and not a.startswith("--nproc")]
        missing = [k for k in keys if k not in parser]
        assert not missing, f"{doc}: {args}: no such config ids {missing}"
