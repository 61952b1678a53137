"""The Hugging Face Hub, both ways, through huggingface_hub: `hf-hub:ORG/NAME[@REVISION]` names a checkpoint
that `snapshot_download` keeps in the user's Hugging Face cache (HF_HOME / HF_HUB_CACHE and HF_HUB_OFFLINE
honoured), and `upload` sends a staged folder as one commit. A failure is a one-line HubError: what to do."""

from __future__ import annotations

import re
from pathlib import Path

from huggingface_hub import HfApi, snapshot_download
from huggingface_hub import errors as hf

PREFIX, LOGIN = "hf-hub:", "log in with `hf auth login` or set HF_TOKEN"


class HubError(ValueError):
    """The Hub could not give or take a checkpoint; the message is one line the CLI prints as is."""


def is_hub(name: str | Path) -> bool:
    """Whether a checkpoint is named on the Hub rather than by a folder."""
    return str(name).startswith(PREFIX)


def parse_ref(name: str) -> tuple[str, str | None]:
    """(ORG/NAME, REVISION or None) of hf-hub:ORG/NAME[@REVISION] (or of push's ORG/NAME)."""
    repo, _, revision = name.removeprefix(PREFIX).partition("@")
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", repo):
        raise HubError(f"{repo!r} is not a Hub repo: write ORG/NAME (letters, digits, '-', '_', '.')")
    return repo, revision or None


def short_name(name: str) -> str:
    """What the app and a model card call a Hub checkpoint: NAME, or NAME@REVISION."""
    repo, revision = parse_ref(name)
    return repo.split("/")[1] + (f"@{revision}" if revision else "")


def _one_line(e: Exception, repo: str, revision: str | None) -> str:
    """What huggingface_hub's (many-line) errors mean for the person who named the repo."""
    status = getattr(getattr(e, "response", None), "status_code", None)
    if isinstance(e, hf.RevisionNotFoundError):
        return f"the Hub repo {repo} has no revision {revision!r}"
    if isinstance(e, hf.RepositoryNotFoundError):  # also a private or gated repo without a token
        return f"no Hub repo {repo} that you can see (a typo? private: {LOGIN})"
    if isinstance(e, hf.LocalEntryNotFoundError):
        offline = "the Hub cannot be reached (offline, or HF_HUB_OFFLINE=1)"
        return f"{repo} is not in the Hugging Face cache and {offline}"
    if isinstance(e, hf.OfflineModeIsEnabled):
        return "the Hub cannot be reached with HF_HUB_OFFLINE=1"
    if isinstance(e, hf.HfHubHTTPError) and status in (401, 403):
        return f"the Hub refused ({status}): {LOGIN}, with write access to upload"
    return f"{type(e).__name__}: {' '.join(str(e).split())[:200]}"


def download(name: str) -> Path:
    """The local folder of hf-hub:ORG/NAME[@REVISION]: downloaded once into the Hugging Face cache, reused."""
    repo, revision = parse_ref(name)
    try:
        return Path(snapshot_download(repo, revision=revision, library_name="pagdemo"))
    except Exception as e:  # noqa: BLE001 (network errors are requests', httpx' or the Hub's, by version)
        raise HubError(f"cannot fetch {name}: {_one_line(e, repo, revision)}") from None


def upload(folder: Path, repo: str, revision: str | None, private: bool, message: str) -> str:
    """Create the repo (and branch) if need be and upload `folder` as one commit; returns the commit's URL."""
    api = HfApi(library_name="pagdemo")
    try:
        api.create_repo(repo, private=private, exist_ok=True)
        if revision:
            api.create_branch(repo, branch=revision, exist_ok=True)
        info = api.upload_folder(repo_id=repo, folder_path=folder, revision=revision, commit_message=message)
        return info.commit_url
    except Exception as e:  # noqa: BLE001 (as in download: one line, whatever the transport raised)
        why = _one_line(e, repo, revision)
        raise HubError(f"cannot upload to {repo}: {why}; no file was uploaded") from None
