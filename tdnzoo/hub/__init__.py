"""Pretrained weights on the Hugging Face Hub: loading, exporting, model cards and the zoo table.

- ``create_model('tdn_resnet50.sthv1_8f', pretrained=True)`` -> :func:`load_pretrained_weights`
- ``create_model('hf-hub:ORG/REPO[@REV]' | 'local-dir:PATH', pretrained=True)`` -> :func:`create_from_export`
- :func:`save_pretrained` writes ``model.safetensors`` + ``config.json`` + ``README.md``;
  :func:`push_to_hub` uploads such a folder.
"""
from .card import model_card_data, render_model_card
from .download import HubFileNotFoundError, HubRepoNotFoundError, download_file, download_weights
from .export import export_config, push_to_hub, save_pretrained, write_model_card
from .loading import create_from_export, load_pretrained_weights, parse_export_name, read_export_config
from .zoo_table import replace_zoo_section, zoo_table

__all__ = [
    "HubFileNotFoundError",
    "HubRepoNotFoundError",
    "create_from_export",
    "download_file",
    "download_weights",
    "export_config",
    "load_pretrained_weights",
    "model_card_data",
    "parse_export_name",
    "push_to_hub",
    "read_export_config",
    "render_model_card",
    "replace_zoo_section",
    "save_pretrained",
    "write_model_card",
    "zoo_table",
]
