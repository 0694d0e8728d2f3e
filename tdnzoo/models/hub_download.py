"""Fetching files from the Hugging Face Hub (or its local cache), with errors that say what to do."""
from __future__ import annotations

import logging
from pathlib import Path

from ..errors import CheckpointError
from ..version import __version__

__all__ = ["WEIGHT_FILES", "HubFileNotFoundError", "HubRepoNotFoundError", "download_file", "download_weights"]

_log = logging.getLogger(__name__)

# Safetensors first: it loads without unpickling. The pickle goes through weights_only=True.
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


class HubFileNotFoundError(CheckpointError, FileNotFoundError):
    """A repository, revision or file that is neither on the Hub nor in the local cache.

    ``reason`` is the cause without the file's name, to merge the reasons of several files.
    """

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason or message


class HubRepoNotFoundError(HubFileNotFoundError):
    """A repository or revision that the Hub does not have (or does not show without a token)."""


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def download_file(repo_id: str, filename: str, *, revision: str | None = None,
                  cache_dir: str | Path | None = None) -> Path:
    """Path of ``filename`` of ``repo_id@revision`` in the Hub cache, downloading it if needed.

    The Hub client is told the caller is tdnzoo (``library_name``/``library_version``).

    Raises:
        HubFileNotFoundError: no such repository, revision or file, or offline and not cached.
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = f"{repo_id}@{revision or 'main'}"
    try:
        path = hf_hub_download(
            repo_id, filename, revision=revision, cache_dir=cache_dir,
            library_name="tdnzoo", library_version=__version__,
        )
    except GatedRepoError as exc:
        raise HubRepoNotFoundError(
            f"{where} is gated on the Hugging Face Hub: accept its terms on the website and log in "
            "(`hf auth login` or HF_TOKEN)"
        ) from exc
    except RepositoryNotFoundError as exc:
        raise HubRepoNotFoundError(
            f"no repository {repo_id} on the Hugging Face Hub (or it is private: log in with a token)"
        ) from exc
    except RevisionNotFoundError as exc:
        raise HubRepoNotFoundError(f"{repo_id} has no revision '{revision}'") from exc
    except LocalEntryNotFoundError as exc:  # offline (or unreachable) and not in the cache
        if _offline():
            reason = "HF_HUB_OFFLINE is set and the local Hugging Face cache does not have it"
        else:
            reason = "the Hub could not be reached and the local Hugging Face cache does not have it"
        raise HubFileNotFoundError(f"cannot get {filename} of {where}: {reason}", reason) from exc
    except EntryNotFoundError as exc:
        raise HubFileNotFoundError(f"{where} has no file {filename}", "the repository does not have it") from exc
    return Path(path)


def download_weights(repo_id: str, *, revision: str | None = None, cache_dir: str | Path | None = None,
                     filenames: tuple[str, ...] = WEIGHT_FILES) -> Path:
    """The first of ``filenames`` (safetensors, then the pickle) that ``repo_id@revision`` has.

    Raises:
        HubFileNotFoundError: none of them is available; the message lists why for each.
    """
    reasons: dict[str, list[str]] = {}
    for name in filenames:
        try:
            return download_file(repo_id, name, revision=revision, cache_dir=cache_dir)
        except HubRepoNotFoundError:
            raise  # a missing repository or revision will not have the next file either
        except HubFileNotFoundError as exc:
            reasons.setdefault(exc.reason, []).append(name)
            _log.debug("%s", exc)
    why = "; ".join(f"{' / '.join(names)}: {reason}" for reason, names in reasons.items())
    raise HubFileNotFoundError(f"no weights for {repo_id}@{revision or 'main'} ({why})", why)
