"""The Hugging Face Hub side of the weights: downloading, reading exports, writing and uploading them, model cards.

Nothing here builds a model: :func:`tdnzoo.create_model` asks this package for files and configs.

- ``create_model('tdn_resnet50.sthv1_8f', pretrained=True)`` finds its file with :func:`pretrained_weights_file`;
- ``create_model('hf-hub:ORG/REPO[@REV]' | 'local-dir:PATH', pretrained=True)`` reads the export with
  :func:`load_export_cfg`;
- :func:`save_pretrained` writes ``model.safetensors`` + ``config.json`` + ``README.md``;
  :func:`push_to_hub` uploads such a folder.
"""
from ..models.hub_download import HubFileNotFoundError, HubRepoNotFoundError, download_file, download_weights
from ..models.hub_loading import (
    WeightsFile,
    is_export_name,
    load_export_cfg,
    parse_export_name,
    pretrained_weights_file,
    read_export_config,
)
from .card import model_card_data, render_model_card
from .export import export_config, push_to_hub, save_pretrained, write_model_card

__all__ = [
    "HubFileNotFoundError",
    "HubRepoNotFoundError",
    "WeightsFile",
    "download_file",
    "download_weights",
    "export_config",
    "is_export_name",
    "load_export_cfg",
    "model_card_data",
    "parse_export_name",
    "pretrained_weights_file",
    "push_to_hub",
    "read_export_config",
    "render_model_card",
    "save_pretrained",
    "write_model_card",
]
