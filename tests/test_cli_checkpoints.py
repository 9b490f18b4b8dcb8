"""``monai_flow.checkpoints.load_network_weights``: safe loading, formats, and errors that explain themselves."""

from __future__ import annotations

import datetime

import pytest
import torch
import torch.nn as nn

from monai_flow.checkpoints import CheckpointError, load_network_weights
from monai_flow.networks import SliceWise, VelocityUNet


def net(channels=(8, 16), seed=0) -> VelocityUNet:
    torch.manual_seed(seed)
    return VelocityUNet(2, channels=channels, attention_levels=(False,) * len(channels), norm_num_groups=8,
                        num_res_blocks=1)


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


@pytest.mark.parametrize("layout", ["plain", "model", "network", "state_dict", "ddp", "slicewise"])
def test_accepted_layouts(tmp_path, layout):
    src = net(seed=1)
    state = src.state_dict()
    content = {
        "plain": state,
        "model": {"model": state, "optimizer": {"lr": torch.tensor(1.0)}, "epoch": 3},
        "network": {"network": state},
        "state_dict": {"state_dict": state},
        "ddp": {f"module.{k}": v for k, v in state.items()},
        "slicewise": SliceWise(src).state_dict(),  # keys 'network.<...>'
    }[layout]
    torch.save(content, tmp_path / "w.pt")
    dst = net(seed=2)
    assert not same_weights(src, dst)
    load_network_weights(dst, tmp_path / "w.pt")
    assert same_weights(src, dst)


def test_slicewise_loads_into_the_wrapped_network_and_explicit_key(tmp_path):
    src = net(seed=1)
    torch.save({"ema": src.state_dict(), "model": net(seed=5).state_dict()}, tmp_path / "w.pt")
    wrapped = SliceWise(net(seed=2))
    load_network_weights(wrapped, tmp_path / "w.pt", key="ema")
    assert same_weights(src, wrapped.network)
    with pytest.raises(CheckpointError, match="has no key 'swa'"):
        load_network_weights(wrapped, tmp_path / "w.pt", key="swa")


def test_missing_corrupt_truncated_and_empty_files(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_network_weights(net(), tmp_path / "missing.pt")
    torch.save(net().state_dict(), tmp_path / "ok.pt")
    data = (tmp_path / "ok.pt").read_bytes()
    for name, content in (("truncated", data[: len(data) // 2]), ("empty", b""), ("garbage", b"\x80\x02garbage" * 20),
                          ("text", b"not a checkpoint at all\n" * 20)):
        (tmp_path / f"{name}.pt").write_bytes(content)
        with pytest.raises(CheckpointError, match=f"corrupt or truncated checkpoint {tmp_path / name}.pt: "):
            load_network_weights(net(), tmp_path / f"{name}.pt")
    with pytest.raises(CheckpointError, match="is not a file"):
        load_network_weights(net(), tmp_path)


def test_unsafe_content_is_refused(tmp_path):
    torch.save({"model": net().state_dict(), "saved": datetime.datetime(2024, 1, 1)}, tmp_path / "unsafe.pt")
    refused = r"refused to load checkpoint .*unsafe.pt.*Unsupported global.*weights_only"
    with pytest.raises(CheckpointError, match=refused):
        load_network_weights(net(), tmp_path / "unsafe.pt")
    torch.save([torch.zeros(1)], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="holds a list, expected a state_dict"):
        load_network_weights(net(), tmp_path / "list.pt")


def test_architecture_mismatch_names_keys_and_shapes(tmp_path):
    torch.save(net(channels=(16, 16, 32)).state_dict(), tmp_path / "other.pt")
    target = net(channels=(8, 16))
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(CheckpointError) as info:
        load_network_weights(target, tmp_path / "other.pt")
    message = str(info.value)
    assert f"checkpoint {tmp_path / 'other.pt'} does not fit the network VelocityUNet" in message
    assert "40 unexpected key(s): unet.down_blocks." in message and "2 missing key(s): unet." in message
    assert "shape mismatch(es): unet.conv_in.conv.weight: checkpoint (16, 1, 3, 3) vs network (8, 1, 3, 3)" in message
    assert "trained with a different network configuration" in message
    assert all(torch.equal(before[k], v) for k, v in target.state_dict().items())  # untouched on error
    partial = {k: v for k, v in net().state_dict().items() if "time_embed" not in k}
    torch.save(partial, tmp_path / "partial.pt")
    with pytest.raises(CheckpointError, match=r"missing key\(s\): unet.time_embed.0.weight"):
        load_network_weights(net(), tmp_path / "partial.pt")
