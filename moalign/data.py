"""Reading sample files (JSONL, CSV) with errors that name the file and line, and atomic writes."""
from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pandas as pd

from moalign.errors import MoalignError

TEXT_FIELDS = ("prompt", "completion", "source")


def _normalise(record: dict, where: str) -> dict:
    """One sample dict: text fields as str, `reference` (str) folded into `references` (list)."""
    if not isinstance(record, dict):
        raise MoalignError(f"{where}: expected a JSON object, got {type(record).__name__}")
    out = dict(record)
    for field in TEXT_FIELDS:
        value = out.get(field)
        if value is not None and not isinstance(value, str):
            if isinstance(value, float) and value != value:  # NaN from an empty CSV cell
                value = None
            else:
                raise MoalignError(f"{where}: field {field!r} must be a string, got {type(value).__name__}")
        out[field] = value
    refs = out.pop("references", None)
    single = out.pop("reference", None)
    if isinstance(refs, str):
        refs = [refs]
    if refs is None and isinstance(single, str):
        refs = [single]
    if refs is not None and not (isinstance(refs, list) and all(isinstance(r, str) for r in refs)):
        raise MoalignError(f"{where}: field 'references' must be a list of strings")
    out["references"] = refs
    return out


def _read_jsonl(path: Path) -> list[dict]:
    records = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise MoalignError(f"{path}:{lineno}: malformed JSON ({exc.msg})") from None
            records.append(_normalise(record, f"{path}:{lineno}"))
    return records


def _read_csv(path: Path) -> list[dict]:
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        return []
    except pd.errors.ParserError as exc:
        raise MoalignError(f"{path}: malformed CSV ({exc})") from None
    records = []
    for i, row in enumerate(frame.to_dict("records")):
        for column in ("references", "reference", "source"):
            if row.get(column) == "":  # an empty cell means the field is absent for this row
                row[column] = None
        refs = row.get("references")
        if isinstance(refs, str) and refs.startswith("["):
            try:  # a JSON list in a CSV cell is how several references fit one column
                row["references"] = json.loads(refs)
            except json.JSONDecodeError:
                raise MoalignError(f"{path}:{i + 2}: column 'references' is not a JSON list") from None
        records.append(_normalise(row, f"{path}:{i + 2}"))  # +2: header line, 1-based
    return records


def load_samples(path: str | os.PathLike) -> list[dict]:
    """Samples from a `.jsonl`/`.json` (one object a line) or `.csv` file.

    >>> load_samples("pipelines/data/samples.jsonl")[0]["prompt"][:9]
    'Summarize'
    """
    path = Path(path)
    if not path.is_file():
        raise MoalignError(f"{path}: no such data file")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json", ".ndjson"):
        records = _read_jsonl(path)
    elif suffix == ".csv":
        records = _read_csv(path)
    else:
        raise MoalignError(f"{path}: unsupported data format {suffix!r} (use .jsonl or .csv)")
    if not records:
        raise MoalignError(f"{path}: no samples in file")
    return records


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; it replaces `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_table(frame: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write CSV or Parquet (by extension) atomically: a failed write leaves no partial file."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".parquet"):
        raise MoalignError(f"{path}: output must end in .csv or .parquet")
    with atomic_path(path) as tmp:
        if suffix == ".csv":
            frame.to_csv(tmp, index=False)
        else:
            frame.to_parquet(tmp, index=False)
    return path


def load_prompt_records(path: str | os.PathLike) -> list[dict]:
    """Samples that must carry a non-empty `prompt` (training and evaluation prompts)."""
    records = load_samples(path)
    for i, record in enumerate(records):
        if not record.get("prompt"):
            raise MoalignError(f"{path}: record {i + 1} has no 'prompt'")
    return records


def train_eval_split(records: list[dict], eval_fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """A seeded split: the same config always holds out the same prompts."""
    import numpy as np

    order = np.random.default_rng(seed).permutation(len(records))
    n_eval = max(1, int(round(len(records) * eval_fraction)))
    if n_eval >= len(records):
        raise MoalignError(f"cannot hold out {n_eval} of {len(records)} prompts for evaluation: add data or lower data.eval_fraction")
    return [records[i] for i in order[n_eval:]], [records[i] for i in order[:n_eval]]
