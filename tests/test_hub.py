"""Hub loading, exports, model cards and publishing, all offline: a hand-made Hugging Face cache
(``models--ORG--NAME/refs/main`` + ``snapshots/<hash>/``) with ``HF_HUB_OFFLINE`` patched on."""
from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from types import SimpleNamespace

import huggingface_hub
import pytest
import torch
from huggingface_hub import ModelCard, constants

import tdnzoo
from tdnzoo.errors import CheckpointError
from tdnzoo.hub import HubFileNotFoundError, parse_export_name, push_to_hub, render_model_card
from tdnzoo.models.checkpoint import sha256_of
from tdnzoo.models.pretrained import PRETRAINED_CFGS, get_pretrained_cfg

REPO = "tdnzoo-test/tiny-tdn"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
TAG = "tsm_test_resnet.tiny_test"


def _exported(arch: str, folder: Path) -> SimpleNamespace:
    """A small model with non-trivial weights, its export (save_pretrained) and its outputs on a fixed clip."""
    torch.manual_seed(0)
    model = tdnzoo.create_model(arch, num_classes=5, num_segments=2).eval()
    with torch.no_grad():  # non-trivial BN statistics, so a lost buffer changes the outputs
        for name, buf in model.named_buffers():
            if name.endswith("running_mean"):
                buf.normal_(0, 0.1)
    tdnzoo.save_pretrained(model, folder, repo_id=REPO)
    clip = torch.randn(2, model.num_frames, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model(clip)
    return SimpleNamespace(model=model, folder=folder, clip=clip, expected=expected)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny TSM (cheap to build) for the loading paths."""
    return _exported("tsm_test_resnet", tmp_path_factory.mktemp("export") / "tiny")


@pytest.fixture(scope="module")
def tiny_tdn(tmp_path_factory):
    """A small TDN: S-TDM stream, L-TDM and temporal convs must survive the round trip too."""
    return _exported("tdn_test_resnet", tmp_path_factory.mktemp("export") / "tiny_tdn")


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache in tmp, offline; returns ``add(repo_id, files)`` to fill it."""
    root = tmp_path / "hf-cache"
    root.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(root))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)

    def add(repo_id: str, files: dict[str, Path], commit: str = COMMIT) -> Path:
        repo = root / f"models--{repo_id.replace('/', '--')}"
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / "main").write_text(commit)
        snapshot = repo / "snapshots" / commit
        snapshot.mkdir(parents=True, exist_ok=True)
        for name, src in files.items():
            shutil.copy(src, snapshot / name)
        return snapshot

    return add


def _export_files(folder: Path) -> dict[str, Path]:
    return {name: folder / name for name in ("config.json", "model.safetensors")}


def _outputs(model, clip):
    with torch.no_grad():
        return model.eval()(clip)


@pytest.fixture
def tiny_tag(tiny, monkeypatch):
    """A registered tag whose weights are the tiny export, published under REPO."""
    config = json.loads((tiny.folder / "config.json").read_text())
    cfg = {
        "architecture": "tsm_test_resnet", "tag": "tiny_test", "method": "tsm", "backbone": "test_resnet",
        "num_classes": 5, "num_segments": 2, "hf_hub_id": REPO, "hf_hub_revision": "main",
        "hf_hub_filename": "model.safetensors", "sha256": config["pretrained_cfg"]["sha256"],
        "top1": 12.5, "top5": 50.0, "dataset_name": "Tiny", "metrics_source": "a test",
        "metrics_source_url": "https://example.org/tiny", "weights_url": "https://example.org/tiny.pth",
    }
    monkeypatch.setitem(PRETRAINED_CFGS, TAG, cfg)
    return cfg


def test_save_pretrained_writes_weights_config_and_card(tiny):
    names = sorted(p.name for p in tiny.folder.iterdir())
    assert names == ["README.md", "config.json", "model.safetensors"]
    config = json.loads((tiny.folder / "config.json").read_text())
    assert config["architecture"] == "tsm_test_resnet"
    assert config["model_args"] == json.loads(json.dumps(tiny.model.model_args))
    assert config["pretrained_cfg"]["sha256"] == sha256_of(tiny.folder / "model.safetensors")
    assert config["pretrained_cfg"]["hf_hub_id"] == REPO and config["num_segments"] == 2
    card = ModelCard.load(tiny.folder / "README.md")
    assert card.data.library_name == "tdnzoo" and card.data.pipeline_tag == "video-classification"
    assert f'create_model("hf-hub:{REPO}", pretrained=True)' in card.text


def test_hf_hub_round_trip_is_bit_exact(tiny_tdn, hub_cache, monkeypatch):
    tiny = tiny_tdn
    hub_cache(REPO, _export_files(tiny.folder))
    calls = []
    real = huggingface_hub.hf_hub_download

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", spy)
    for name in (f"hf-hub:{REPO}", f"hf-hub:{REPO}@{COMMIT}"):
        model = tdnzoo.create_model(name, pretrained=True)
        assert torch.equal(_outputs(model, tiny.clip), tiny.expected)
        assert model.pretrained_cfg["hf_hub_id"] == REPO and model.num_segments == 2
    assert {c["library_name"] for c in calls} == {"tdnzoo"}
    assert {c["library_version"] for c in calls} == {tdnzoo.__version__}
    assert {c["revision"] for c in calls} == {None, COMMIT}
    with pytest.raises(HubFileNotFoundError, match="v9"):  # a revision that is not cached
        tdnzoo.create_model(f"hf-hub:{REPO}@v9", pretrained=True)


def test_registered_tag_loads_from_the_hub_cache(tiny, tiny_tag, hub_cache):
    hub_cache(REPO, _export_files(tiny.folder))
    model = tdnzoo.create_model(TAG, pretrained=True)
    assert torch.equal(_outputs(model, tiny.clip), tiny.expected)
    assert model.pretrained_cfg["top1"] == 12.5 and model.num_classes == 5


def test_pretrained_with_other_num_classes_resets_only_the_head(tiny, tiny_tag, hub_cache, caplog):
    hub_cache(REPO, _export_files(tiny.folder))
    source = tiny.model.state_dict()
    for name in (TAG, f"hf-hub:{REPO}", f"local-dir:{tiny.folder}"):
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            model = tdnzoo.create_model(name, pretrained=True, num_classes=3)
        assert "resetting the classifier" in caplog.text and "5 classes" in caplog.text
        state = model.state_dict()
        head = {k for k in state if k.startswith("backbone.fc.")}
        assert head and all(state[k].shape[0] == 3 for k in head)
        assert all(torch.equal(state[k], source[k]) for k in state if k not in head)
        assert model.num_classes == 3 and "top1" not in model.pretrained_cfg
        assert model.pretrained_cfg["finetuned_from"] == name


def test_local_dir_loads_and_pretrained_false_gives_the_architecture(tiny_tdn):
    tiny = tiny_tdn
    model = tdnzoo.create_model(f"local-dir:{tiny.folder}", pretrained=True)
    assert torch.equal(_outputs(model, tiny.clip), tiny.expected)
    fresh = tdnzoo.create_model(f"local-dir:{tiny.folder}")
    assert fresh.state_dict().keys() == model.state_dict().keys()
    assert not torch.equal(_outputs(fresh, tiny.clip), tiny.expected)


def test_pickle_fallback_when_there_is_no_safetensors(tiny, hub_cache, tmp_path):
    torch.save(tiny.model.state_dict(), tmp_path / "pytorch_model.bin")
    hub_cache(REPO, {"config.json": tiny.folder / "config.json", "pytorch_model.bin": tmp_path / "pytorch_model.bin"})
    model = tdnzoo.create_model(f"hf-hub:{REPO}", pretrained=True)
    assert torch.equal(_outputs(model, tiny.clip), tiny.expected)


def test_corrupt_or_truncated_weights_say_what_to_do(tiny, tiny_tag, hub_cache, tmp_path):
    data = (tiny.folder / "model.safetensors").read_bytes()
    damaged = {"corrupt": b"\xff" * 64 + data[64:], "truncated": data[: len(data) // 2]}
    for kind, blob in damaged.items():
        (tmp_path / "model.safetensors").write_bytes(blob)
        hub_cache(REPO, {"config.json": tiny.folder / "config.json", "model.safetensors": tmp_path / "model.safetensors"})
        tiny_tag["sha256"] = None  # no hash: the reader itself must notice
        with pytest.raises(CheckpointError, match="corrupt or truncated") as err:
            tdnzoo.create_model(TAG, pretrained=True)
        assert f"hf cache rm model/{REPO}" in str(err.value), kind
        with pytest.raises(CheckpointError, match="sha256 mismatch"):  # the export's own hash catches it first
            tdnzoo.create_model(f"hf-hub:{REPO}", pretrained=True)


def test_sha256_mismatch_is_an_error(tiny, tiny_tag, hub_cache):
    hub_cache(REPO, _export_files(tiny.folder))
    tiny_tag["sha256"] = "0" * 64
    with pytest.raises(CheckpointError, match="sha256 mismatch") as err:
        tdnzoo.create_model(TAG, pretrained=True)
    assert "0" * 64 in str(err.value) and sha256_of(tiny.folder / "model.safetensors") in str(err.value)


def test_missing_weights_file_is_a_clear_error(tiny, hub_cache):
    hub_cache(REPO, {"config.json": tiny.folder / "config.json"})
    with pytest.raises(HubFileNotFoundError, match="model.safetensors / pytorch_model.bin"):
        tdnzoo.create_model(f"hf-hub:{REPO}", pretrained=True)


def test_missing_repo_offline_is_a_fast_clear_error(hub_cache):
    start = time.perf_counter()
    with pytest.raises(HubFileNotFoundError, match="HF_HUB_OFFLINE") as err:
        tdnzoo.create_model("hf-hub:nobody/no-such-model", pretrained=True)
    assert time.perf_counter() - start < 2.0
    assert "nobody/no-such-model" in str(err.value)


def test_bad_export_names_and_folders(tmp_path):
    assert parse_export_name("hf-hub:org/name@v1.0") == ("hf-hub", "org/name", "v1.0")
    with pytest.raises(ValueError, match="ORG/REPO"):
        parse_export_name("hf-hub:just-a-name")
    with pytest.raises(HubFileNotFoundError, match="save_pretrained"):
        tdnzoo.create_model(f"local-dir:{tmp_path}", pretrained=True)
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(CheckpointError, match="not a tdnzoo export"):
        tdnzoo.create_model(f"local-dir:{tmp_path}", pretrained=True)


@pytest.mark.parametrize("name", sorted(n for n in PRETRAINED_CFGS if n != TAG))
def test_model_card_of_every_tag_parses_with_its_results(name, tmp_path):
    cfg = get_pretrained_cfg(name)
    path = tmp_path / "README.md"
    path.write_text(str(render_model_card(cfg)))
    card = ModelCard.load(path)
    data = card.data
    assert data.library_name == "tdnzoo" and data.pipeline_tag == "video-classification"
    assert data.license == cfg["license"] and data.datasets == [cfg["hf_dataset"]]
    assert data.base_model == cfg["base_model"] and cfg["method"] in data.tags
    results = {r.metric_name: r for r in data.eval_results}
    assert results["Top-1 accuracy"].metric_value == cfg["top1"]
    assert ("Top-5 accuracy" in results) == (cfg["top5"] is not None)
    if cfg["top5"] is not None:
        assert results["Top-5 accuracy"].metric_value == cfg["top5"]
    assert {r.source_url for r in data.eval_results} == {cfg["metrics_source_url"]}
    assert all(r.dataset_name == cfg["dataset_name"] for r in data.eval_results)
    assert "@inproceedings" in card.text and f"{cfg['gflops']:.2f} GFLOPs" in card.text


def _mock_hub(monkeypatch):
    calls = {}

    def create_repo(self, repo_id, **kwargs):
        calls["create_repo"] = {"repo_id": repo_id, **kwargs}
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(self, **kwargs):
        calls["upload_folder"] = kwargs
        calls["uploaded"] = sorted(p.name for p in Path(kwargs["folder_path"]).iterdir())
        return SimpleNamespace(commit_url=f"https://huggingface.co/{kwargs['repo_id']}/commit/abc")

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    return calls


def test_push_to_hub_creates_the_repo_and_uploads_the_folder(tiny, monkeypatch):
    calls = _mock_hub(monkeypatch)
    commit = push_to_hub(tiny.folder, "someone/tiny", token="hf_fake", private=True)
    assert calls["create_repo"]["repo_id"] == "someone/tiny" and calls["create_repo"]["exist_ok"] is True
    assert calls["create_repo"]["private"] is True
    assert calls["upload_folder"]["repo_id"] == "someone/tiny"
    assert calls["upload_folder"]["folder_path"] == str(tiny.folder)
    assert calls["uploaded"] == ["README.md", "config.json", "model.safetensors"]
    assert commit.commit_url.endswith("/commit/abc")
    with pytest.raises(FileNotFoundError, match="save_pretrained"):
        push_to_hub(tiny.folder / "nothing", "someone/tiny", token="hf_fake")


@pytest.fixture(scope="module")
def publish():
    from hub import publish

    return publish


def test_publish_a_training_checkpoint_verifies_and_pushes(tiny, tiny_tag, publish, tmp_path, monkeypatch, capsys):
    ckpt = tmp_path / "last.pth"
    torch.save({"model": tiny.model.state_dict(), "optimizer": {"state": {}, "param_groups": []}, "epoch": 3}, ckpt)
    out = tmp_path / "out"
    calls = _mock_hub(monkeypatch)
    assert publish.main([TAG, str(ckpt), "--out", str(out), "--verify-size", "64"]) == 0
    assert "not uploaded" in capsys.readouterr().out and not calls  # no --push: stop after verifying
    argv = [TAG, str(ckpt), "--out", str(out), "--verify-size", "64", "--push", "--token", "hf_fake"]
    assert publish.main(argv) == 0
    printed = capsys.readouterr().out
    sha = sha256_of(out / "model.safetensors")
    assert sha in printed and calls["create_repo"]["repo_id"] == REPO and calls["upload_folder"]["folder_path"] == str(out)
    card = ModelCard.load(out / "README.md")
    assert "## Conversion" in card.text and sha in card.text
    assert {r.metric_value for r in card.data.eval_results} == {12.5, 50.0}
    reloaded = tdnzoo.create_model(f"local-dir:{out}", pretrained=True)
    assert torch.equal(_outputs(reloaded, tiny.clip), tiny.expected)


def test_publish_converts_an_official_tsm_release(synth, publish, tmp_path):
    ckpt = synth.official_checkpoint("tsm_resnet50", seed=5, num_classes=174)
    torch.save(ckpt, tmp_path / "TSM_something.pth")
    done = publish.export_release("tsm_resnet50.sthv1_8f", tmp_path / "TSM_something.pth", tmp_path / "out",
                                  verify_size=32)
    assert done["repo_id"] == "tdnzoo/tsm_resnet50.sthv1_8f"
    assert done["verification"]["max_abs_diff"] == 0.0
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["label_names"][0] == "Approaching something with your camera" and len(config["label_names"]) == 174
    assert config["pretrained_cfg"]["sha256"] == done["sha256"]


def test_verification_catches_a_different_export(tiny, publish, tmp_path):
    tdnzoo.save_pretrained(tiny.model, tmp_path / "x", model_card=False)
    other = tdnzoo.create_model("tsm_test_resnet", num_classes=5, num_segments=2)
    with pytest.raises(publish.VerificationError, match="differ"):
        publish.verify_export(other, tmp_path / "x", size=64)


def test_export_command_writes_a_loadable_folder(tmp_path, capsys):
    from tdnzoo.cli import main as cli_main

    torch.manual_seed(0)
    source = tdnzoo.create_model("tsm_test_resnet", num_classes=3, num_segments=2)
    tdnzoo.save_weights(source, tmp_path / "mine.safetensors")
    argv = ["save-pretrained", "tsm_test_resnet", str(tmp_path / "out"), "--checkpoint-path", str(tmp_path / "mine.safetensors"),
            "--num-segments", "2", "--repo-id", "me/mine"]
    assert cli_main(argv) == 0
    assert "local-dir:" in capsys.readouterr().out
    model = tdnzoo.create_model(f"local-dir:{tmp_path / 'out'}", pretrained=True)
    clip = torch.randn(1, 2, 3, 32, 32)
    assert model.num_classes == 3 and torch.equal(_outputs(model, clip), _outputs(source, clip))
    assert 'create_model("hf-hub:me/mine", pretrained=True)' in (tmp_path / "out" / "README.md").read_text()
