"""What moalign takes from a tracking store, it checks: weights and pools against hashes logged
when they were made, reused runs against the identity they claim.

Tags can be rewritten by anyone who can write to the store; params cannot be changed once logged.
So a run logs the SHA-256 of what it made as a param (`moalign.adapter_sha256`: the adapter
folder; `moalign.pool_sha256`: the pool table), and whoever loads it (`load_policy`, `generate`,
`export`, `register`, a search reusing the run) reads the run's own logged artifact, or the local
folder a tag points at only when it hashes to the logged value. See docs/architecture.md, "Trust
model", for what this does and does not protect against.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from moalign.errors import MoalignError

ADAPTER_HASH = "moalign.adapter_sha256"
POOL_HASH = "moalign.pool_sha256"
SKIPPED = ("README.md",)  # the model card: text about the weights, not the weights


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def folder_sha256(folder: str | Path) -> str:
    """One hash over every file of `folder` (names and contents, sorted by name), the model card aside."""
    folder = Path(folder)
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name not in SKIPPED):
        digest.update(str(path.relative_to(folder)).encode() + b"\0" + file_sha256(path).encode())
    return digest.hexdigest()


def verified_dir(tracker, run, scratch: Path, artifact: str = "adapter") -> Path:
    """A local folder with run `run`'s `artifact` (its adapter): the run's own folder where a tag
    points at one whose hash is the logged one, else the logged artifact, downloaded into `scratch`
    and checked against the logged hash. Runs from before hashes were logged: the logged artifact."""
    from moalign.policies import guard

    run_id = run.info.run_id
    expected = run.data.params.get(ADAPTER_HASH)
    checkpoint = run.data.tags.get("moalign.checkpoint_dir")
    local = Path(checkpoint).parent / artifact if checkpoint else None
    if expected and local is not None and local.is_dir() and folder_sha256(local) == expected:
        return local
    with guard(tracker.uri, f"read the {artifact} of run {run_id}"):
        if not tracker.client.list_artifacts(run_id, artifact):
            where = f" and its folder {local} does not hash to the logged {expected[:12]}..." if expected else \
                f" and no {ADAPTER_HASH} to check a local folder against"
            raise MoalignError(f"run {run_id} logged no {artifact} (tracking.log_adapter: false?){where}")
        scratch.mkdir(parents=True, exist_ok=True)
        downloaded = Path(tracker.client.download_artifacts(run_id, artifact, str(scratch)))
    if expected and folder_sha256(downloaded) != expected:
        raise MoalignError(f"run {run_id}: its logged {artifact} does not hash to the {ADAPTER_HASH} logged at training "
                           f"({expected[:12]}...): refusing to load weights that are not the ones it trained")
    return downloaded


def check_pool(run, path: str | Path) -> bool:
    """Whether the pool table at `path` is the one run `run` logged (its `moalign.pool_sha256`)."""
    expected = run.data.params.get(POOL_HASH)
    return bool(expected) and Path(path).is_file() and file_sha256(path) == expected
