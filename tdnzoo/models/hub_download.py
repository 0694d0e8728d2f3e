"""Fetching files from the Hugging Face Hub (or its local cache), with errors that say what to do."""
from __future__ import annotations

import logging
from pathlib import Path

from ..errors import CheckpointError
from ..version import __version__

__all__ = [
    "OFFLINE_HINT",
    "WEIGHT_FILES",
    "HubFileNotFoundError",
    "HubRepoNotFoundError",
    "HubUnreachableError",
    "download_file",
    "download_weights",
]

_log = logging.getLogger(__name__)

# Safetensors first: it loads without unpickling. The pickle goes through weights_only=True.
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
# One request, no retries: how long to wait for the Hub to answer before saying it cannot be reached.
# (huggingface_hub itself retries a failed request five times with back-off when the cache lacks the file.)
PROBE_TIMEOUT_S = 5.0
OFFLINE_HINT = (
    "connect to download it into the cache once, set HF_HUB_OFFLINE=1 to use only the cache without waiting "
    "for the network, or load an export from disk with 'local-dir:PATH'"
)


class HubFileNotFoundError(CheckpointError, FileNotFoundError):
    """A repository, revision or file that is neither on the Hub nor in the local cache.

    ``reason`` is the cause without the file's name, to merge the reasons of several files.
    """

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason or message


class HubRepoNotFoundError(HubFileNotFoundError):
    """A repository or revision that the Hub does not have (or does not show without a token)."""


class HubUnreachableError(HubFileNotFoundError):
    """The Hub does not answer (no network, a proxy or a firewall) and the cache lacks the file."""


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _unreachable(repo_id: str, filename: str, revision: str | None) -> str | None:
    """Why the Hub does not answer a request for the file's metadata (one try), or ``None`` when it answers.

    Any HTTP answer counts, a 404 included (``hf_hub_download`` then says what is missing); a connection,
    name-resolution, proxy or TLS error or a timeout does not.
    """
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url
    from huggingface_hub.errors import HfHubHTTPError

    url = hf_hub_url(repo_id, filename, revision=revision, endpoint=constants.ENDPOINT)
    try:
        get_hf_file_metadata(url, timeout=PROBE_TIMEOUT_S, library_name="tdnzoo", library_version=__version__)
    except HfHubHTTPError:
        return None
    except Exception as exc:  # noqa: BLE001 - the transport's own errors (httpx): no answer at all
        return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return None


def _from_cache(repo_id: str, filename: str, *, revision: str | None, cache_dir: str | Path | None) -> Path | None:
    """The file from the local Hub cache, without asking the Hub; ``None`` if it is not there."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(hf_hub_download(repo_id, filename, revision=revision, cache_dir=cache_dir, local_files_only=True))
    except LocalEntryNotFoundError:
        return None


def download_file(repo_id: str, filename: str, *, revision: str | None = None,
                  cache_dir: str | Path | None = None) -> Path:
    """Path of ``filename`` of ``repo_id@revision`` in the Hub cache, downloading it if needed.

    The Hub client is told the caller is tdnzoo (``library_name``/``library_version``).

    Raises:
        HubFileNotFoundError: no such repository, revision or file, or offline and not cached.
        HubUnreachableError: the Hub does not answer and the file is not cached; raised after one
            request (``PROBE_TIMEOUT_S`` at most), not after huggingface_hub's retries with back-off.
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
    if not _offline():
        unreachable = _unreachable(repo_id, filename, revision)
        if unreachable:
            cached = _from_cache(repo_id, filename, revision=revision, cache_dir=cache_dir)
            if cached is not None:
                return cached
            reason = f"the Hugging Face Hub does not answer ({unreachable}) and the local cache does not have it"
            raise HubUnreachableError(f"cannot get {filename} of {where}: {reason}; {OFFLINE_HINT}", reason)
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
            hint = "connect without HF_HUB_OFFLINE to download it once, or load an export from disk with 'local-dir:PATH'"
        else:
            reason = "the Hub could not be reached and the local Hugging Face cache does not have it"
            hint = OFFLINE_HINT
        raise HubFileNotFoundError(f"cannot get {filename} of {where}: {reason}; {hint}", reason) from exc
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
        except HubUnreachableError:
            # the next files cannot be downloaded either: only the cache may hold one of them
            for other in filenames[filenames.index(name) + 1:]:
                cached = _from_cache(repo_id, other, revision=revision, cache_dir=cache_dir)
                if cached is not None:
                    return cached
            raise
        except HubFileNotFoundError as exc:
            reasons.setdefault(exc.reason, []).append(name)
            _log.debug("%s", exc)
    why = "; ".join(f"{' / '.join(names)}: {reason}" for reason, names in reasons.items())
    raise HubFileNotFoundError(f"no weights for {repo_id}@{revision or 'main'} ({why})", why)
