"""Official TDN / TSM checkpoints load through checkpoint_path and reproduce the official logits."""
from __future__ import annotations

import pickle

import pytest
import torch

import tdnzoo
from tdnzoo.cli import main as cli_main

from .conftest import normalise, reference, relative_error


def _official_clip(synth, meta, centre_only=False):
    frames = synth.frames(meta["batch"], meta["num_segments"], meta["size"], seed=meta["input_seed"])
    x = normalise(frames)
    if centre_only:  # TSM sees the centre frame (index 2) of each 5-frame window
        b, s, size = meta["batch"], meta["num_segments"], meta["size"]
        x = x.view(b, s, 5, 3, size, size)[:, :, 2]
    return x


@pytest.fixture(scope="module")
def official_files(synth, tmp_path_factory):
    """Official-layout checkpoints written with torch.save, as the official main.py does."""
    folder = tmp_path_factory.mktemp("official")
    files = {}
    for arch, fixture in (("tdn_resnet50", "tdn_resnet50_t8.json"), ("tsm_resnet50", "tsm_resnet50_t8.json")):
        meta = reference(fixture)
        ckpt = synth.official_checkpoint(arch, seed=meta["weight_seed"], num_classes=meta["num_classes"])
        path = folder / f"{arch}_best.pth.tar"
        torch.save(ckpt, path)
        files[arch] = path
    return files


@pytest.mark.parametrize(
    "arch, fixture, centre_only",
    [("tdn_resnet50", "tdn_resnet50_t8.json", False), ("tsm_resnet50", "tsm_resnet50_t8.json", True)],
)
def test_official_logits_are_reproduced(synth, official_files, arch, fixture, centre_only):
    meta = reference(fixture)
    model = tdnzoo.create_model(
        arch, num_classes=meta["num_classes"], num_segments=meta["num_segments"], checkpoint_path=official_files[arch]
    ).eval()
    with torch.no_grad():
        logits = model(_official_clip(synth, meta, centre_only))
    assert relative_error(logits, torch.tensor(meta["logits"])) < 1e-4


def test_convert_writes_safetensors_that_load_without_conversion(synth, official_files, tmp_path):
    meta = reference("tdn_resnet50_t8.json")
    dst = tmp_path / "tdn_resnet50_sthv1.safetensors"
    assert cli_main(["convert", str(official_files["tdn_resnet50"]), str(dst), "--model", "tdn_resnet50"]) == 0
    from safetensors import safe_open

    with safe_open(str(dst), framework="pt") as f:
        keys = set(f.keys())
        assert f.metadata()["architecture"] == "tdn_resnet50"
    assert not any(k.startswith(("module.", "base_model.")) for k in keys)
    model = tdnzoo.create_model("tdn_resnet50", num_segments=8, checkpoint_path=dst).eval()
    assert model.num_classes == meta["num_classes"]  # inferred from the checkpoint
    with torch.no_grad():
        logits = model(_official_clip(synth, meta))
    assert relative_error(logits, torch.tensor(meta["logits"])) < 1e-4


def test_other_class_counts_and_segment_counts_load(synth, tmp_path):
    ckpt = synth.official_checkpoint("tdn_resnet50", seed=3, num_classes=400)
    path = tmp_path / "k400_16f.pth.tar"
    torch.save(ckpt, path)
    model = tdnzoo.create_model("tdn_resnet50", num_classes=400, num_segments=16, checkpoint_path=path).eval()
    assert model.fusion_weights == (0.75, 0.25)
    sd = model.state_dict()
    bias = ckpt["state_dict"]["module.base_model.layer3_bak.2.conv1.bias"]
    mean = ckpt["state_dict"]["module.base_model.layer3_bak.2.bn1.running_mean"]
    torch.testing.assert_close(sd["backbone.layer3.2.bn1.running_mean"], mean - bias)  # bias folded into BN
    with torch.no_grad():
        assert model(torch.randn(1, 80, 3, 64, 64)).shape == (1, 400)


@pytest.mark.heavy
def test_resnet101_checkpoints_load_strictly(synth, tmp_path):
    for arch in ("tdn_resnet101",):
        path = tmp_path / f"{arch}.pth.tar"
        torch.save(synth.official_checkpoint(arch, seed=0, num_classes=174), path)
        model = tdnzoo.create_model(arch, num_classes=174, num_segments=8, checkpoint_path=path)
        assert sum(p.numel() for p in model.parameters()) > 40_000_000


def test_tsm_resnet101_layout_loads(tmp_path):
    # The official TSM-R101 shifts every other block: its shifted conv1 is 'conv1.net', others 'conv1'.
    model = tdnzoo.create_model("tsm_resnet101", num_classes=10)
    sd = {}
    for key, value in model.state_dict().items():
        key = key.replace("backbone.fc.", "new_fc.").replace("backbone.", "base_model.").replace(".inner.", ".net.")
        sd["module." + key] = value.clone()
    torch.save({"epoch": 1, "state_dict": sd}, tmp_path / "tsm101.pth")
    loaded = tdnzoo.create_model("tsm_resnet101", num_classes=10, checkpoint_path=tmp_path / "tsm101.pth")
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, model.state_dict()[key]), key


def test_a_checkpoint_that_does_not_fit_lists_the_keys(synth, official_files, tmp_path):
    with pytest.raises(tdnzoo.CheckpointMismatchError, match=r"(?s)shape mismatches.*backbone\.fc\.weight.*pass num_classes=174"):
        tdnzoo.create_model("tdn_resnet50", num_classes=10, checkpoint_path=official_files["tdn_resnet50"])
    with pytest.raises(tdnzoo.CheckpointMismatchError, match=r"(?s)missing keys \(417\):.*ltdm.*unexpected keys \(13\): backbone.layer2.0.conv2.weight") as err:
        tdnzoo.create_model("tdn_resnet50", num_classes=174, checkpoint_path=official_files["tsm_resnet50"])
    assert err.value.missing and err.value.unexpected
    sd = synth.official_checkpoint("tdn_resnet50", seed=0, num_classes=174)
    del sd["state_dict"]["module.base_model.layer2_bak.0.mse.conv1.weight"]
    torch.save(sd, tmp_path / "half.pth.tar")
    with pytest.raises(tdnzoo.CheckpointMismatchError, match=r"missing keys \(1\): backbone\.layer2\.0\.conv2\.temporal\.ltdm\.conv_reduce\.weight"):
        tdnzoo.create_model("tdn_resnet50", num_classes=174, checkpoint_path=tmp_path / "half.pth.tar")


class _Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # torch notes the plain pickle we write
def test_pickles_load_only_with_weights_only(tmp_path):
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"state_dict": {"x": _Payload()}}, f)
    with pytest.raises(tdnzoo.CheckpointError, match="weights_only=True"):
        tdnzoo.create_model("tsn_resnet18", checkpoint_path=path, num_classes=2)


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(tdnzoo.CheckpointError, match="checkpoint not found"):
        tdnzoo.create_model("tsn_resnet18", num_classes=2, checkpoint_path=tmp_path / "nope.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(tdnzoo.CheckpointError, match="corrupt or truncated"):
        tdnzoo.create_model("tsn_resnet18", num_classes=2, checkpoint_path=bad)
