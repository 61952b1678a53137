"""`pagdemo push-to-hub FOLDER --repo ORG/NAME`: a checkpoint folder to a Hub repo, as one commit. The folder
must load as a pagdemo checkpoint; exactly its files are staged beside a freshly rendered card (its
model-index carries the recorded results), then uploaded. The folder is unchanged; a failure uploads none."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from pagdemo.options import flag
from pagdemo.records.card import render_card
from pagdemo.records.checkpoints import NOTES, check_folder, info, load_checkpoint, shard_names
from pagdemo.records.hub import PREFIX, parse_ref, upload

# the records beside the weights (a run's resume state stays home)
RECORDS = ("config.json", "metrics.json", "train_log.jsonl", NOTES)


@dataclass(frozen=True)
class PushConfig:
    """`pagdemo push-to-hub`: which checkpoint, to which repo and branch."""

    folder: str = flag(help="the checkpoint folder to upload", positional=True)
    repo: str = flag(help="the Hub repo, ORG/NAME (created if missing)")
    revision: str | None = flag(None, "the branch to commit to (created if missing; default: main)")
    private: bool = flag(False, "create the repo private (an existing repo keeps its visibility)")
    commit_message: str | None = flag(None, "the commit's message (default: names the checkpoint)")
    dry_run: bool = flag(False, "stage and list the files, upload nothing")


def checkpoint_files(folder: Path) -> list[str]:
    """The files that make a checkpoint: weights (and their index), records, audits and the card."""
    names = shard_names(folder) | {"README.md"} | {p.name for p in folder.glob("audit-*.json")}
    return sorted(names | {n for n in RECORDS if (folder / n).is_file()})


def stage(folder: str | Path, dest: Path, name: str) -> list[str]:
    """Copy exactly the checkpoint's files into `dest`, with its card rendered now as `name` on the Hub."""
    folder = check_folder(folder)  # (an hf-hub: checkpoint is staged from its copy in the cache)
    load_checkpoint(folder)  # refuses, in one line, anything that is not a loadable pagdemo checkpoint
    files = checkpoint_files(folder)
    for n in files:
        if n != "README.md":
            shutil.copy2(folder / n, dest / n)
    (dest / "README.md").write_text(render_card(info(folder, name)), encoding="utf-8")
    return files


def push_to_hub(cfg: PushConfig, command: str = "") -> str:
    """Check, stage and upload a checkpoint; what to tell the person (the commit, or the staged files)."""
    repo, at = parse_ref(cfg.repo)  # ORG/NAME@BRANCH says --revision too
    revision = cfg.revision or at
    with tempfile.TemporaryDirectory(prefix="pagdemo-push-") as tmp:
        files = stage(cfg.folder, Path(tmp), repo.split("/")[1])
        if cfg.dry_run:
            return f"would upload to {repo}: " + ", ".join(files)
        message = cfg.commit_message or f"Upload pagdemo checkpoint {Path(cfg.folder).name}"
        url = upload(Path(tmp), repo, revision, cfg.private, message)
    ref = PREFIX + repo + (f"@{revision}" if revision else "")
    return f"uploaded {len(files)} files to {url}; load it with: pagdemo eval --checkpoint {ref} --no-record"
