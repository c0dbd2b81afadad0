"""Reading sample files (JSONL, CSV) with errors that name the file and line, and atomic writes."""
from __future__ import annotations

import codecs
import io
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pandas as pd

from moalign.errors import MoalignError

TEXT_FIELDS = ("prompt", "completion", "source")


def quickstart_data(name: str = "summaries.jsonl") -> str:
    """Path of a file of the quickstart's data, installed with moalign (`pipelines/data` in the
    repository): the default `data.train`, so examples run from any directory.

    >>> Path(quickstart_data()).name
    'summaries.jsonl'
    """
    from importlib.resources import files

    return str(files("moalign.quickstart") / name)


def _normalise(record: dict, where: str, require: tuple[str, ...] = ()) -> dict:
    """One sample dict: text fields as str, `reference` (str) folded into `references` (list)."""
    if not isinstance(record, dict):
        raise MoalignError(f"{where}: expected a JSON object, got {type(record).__name__}")
    for field in require:
        if record.get(field) is None:
            raise MoalignError(f"{where}: no {field!r} field")
    out = dict(record)
    for field in TEXT_FIELDS:
        value = out.get(field)
        if value is not None and not isinstance(value, str):
            if isinstance(value, float) and value != value:  # JSON's NaN: no text to score (CSV cells are read as text)
                raise MoalignError(f"{where}: field {field!r} is NaN, not a string")
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


_BOMS = ((codecs.BOM_UTF32_LE, "UTF-32"), (codecs.BOM_UTF32_BE, "UTF-32"),  # before UTF-16: same first bytes
          (codecs.BOM_UTF16_LE, "UTF-16"), (codecs.BOM_UTF16_BE, "UTF-16"))


def read_text(path: Path) -> str:
    """The file as UTF-8 text (a UTF-8 byte-order mark is fine); any other encoding is an error
    naming the file and line, instead of a UnicodeDecodeError from deep inside a parser."""
    raw = path.read_bytes()
    for bom, name in _BOMS:
        if raw.startswith(bom):
            raise MoalignError(f"{path}: the file is {name} text; save it as UTF-8")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise MoalignError(f"{path}:{line}: not UTF-8 text (byte 0x{raw[exc.start]:02x}); save the file as UTF-8") from None


def _read_jsonl(path: Path, require: tuple[str, ...]) -> list[dict]:
    records = []
    # split on newlines only: JSON strings may hold U+2028 and friends, which str.splitlines breaks on
    for lineno, line in enumerate(read_text(path).split("\n"), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise MoalignError(f"{path}:{lineno}: malformed JSON ({exc.msg})") from None
        except RecursionError:
            raise MoalignError(f"{path}:{lineno}: JSON nested too deeply") from None
        records.append(_normalise(record, f"{path}:{lineno}", require))
    return records


def _read_csv(path: Path, require: tuple[str, ...]) -> list[dict]:
    text = read_text(path)
    try:
        frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        return []
    except pd.errors.ParserError as exc:
        raise MoalignError(f"{path}: malformed CSV ({exc})".splitlines()[0]) from None
    if not isinstance(frame.index, pd.RangeIndex):  # pandas turns the extra leading fields into an index
        raise MoalignError(f"{path}:2: more fields than the header's {len(frame.columns)} columns")
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
        records.append(_normalise(row, f"{path}:{i + 2}", require))  # +2: header line, 1-based
    return records


def load_samples(path: str | os.PathLike, require: tuple[str, ...] = ()) -> list[dict]:
    """Samples from a `.jsonl`/`.json` (one object a line) or `.csv` file; each must have the
    fields in `require` (a missing column is an error, an empty CSV cell is an empty string).

    >>> load_samples(quickstart_data("samples.jsonl"))[0]["prompt"][:9]
    'Summarize'
    """
    path = Path(path)
    if not path.is_file():
        raise MoalignError(f"{path}: no such data file")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json", ".ndjson"):
        records = _read_jsonl(path, require)
    elif suffix == ".csv":
        records = _read_csv(path, require)
    else:
        raise MoalignError(f"{path}: unsupported data format {suffix!r} (use .jsonl or .csv)")
    if not records:
        raise MoalignError(f"{path}: no samples in file")
    return records


def check_writable(path: str | os.PathLike, directory: bool = False) -> Path:
    """Fail now, with one line, if `path` (a file, or a folder when `directory`) cannot be written,
    rather than after the scoring or training whose results it would hold. Leaves nothing behind:
    missing folders are not created, only a probe file is made and removed in the nearest one.
    """
    path = Path(path)
    try:
        if path.is_dir() and not directory:
            raise MoalignError(f"{path}: is a directory; give a file name")
        if path.exists() and directory and not path.is_dir():
            raise MoalignError(f"{path}: exists and is not a directory")
        folder = path if directory else path.parent
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        if not folder.is_dir():
            raise MoalignError(f"{path}: cannot be created, {folder} is a file")
        fd, probe = tempfile.mkstemp(prefix=".moalign-write-probe.", dir=folder)
        os.close(fd)
        os.remove(probe)
    except OSError as exc:
        raise MoalignError(f"{path}: not writable ({exc.strerror or exc})") from None
    return path


def check_table_path(path: str | os.PathLike) -> Path:
    """A writable `.csv` or `.parquet` output path (see `write_table`)."""
    path = Path(path)
    if path.suffix.lower() not in (".csv", ".parquet"):
        raise MoalignError(f"{path}: output must end in .csv or .parquet")
    return check_writable(path)


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
    path = check_table_path(path)
    suffix = path.suffix.lower()
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


def train_eval_split(records: list[dict], eval_fraction: float, seed: int,
                     key: str = "data.eval_fraction") -> tuple[list[dict], list[dict]]:
    """A seeded split of the distinct prompts: the same config always holds out the same prompts,
    and a prompt that appears several times (several references, several sources) lands on one
    side only, or the held-out score would measure prompts the policy trained on."""
    import numpy as np

    prompts = list(dict.fromkeys(r["prompt"] for r in records))
    order = np.random.default_rng(seed).permutation(len(prompts))
    n_eval = max(1, int(round(len(prompts) * eval_fraction)))
    if n_eval >= len(prompts):
        raise MoalignError(f"cannot hold out {n_eval} of {len(prompts)} distinct prompts ({key}): add data or "
                           f"lower {key}")
    held = {prompts[i] for i in order[:n_eval]}
    if len(prompts) == len(records):  # every prompt once: the order the split has always had
        return [records[i] for i in order[n_eval:]], [records[i] for i in order[:n_eval]]
    return [r for r in records if r["prompt"] not in held], [r for r in records if r["prompt"] in held]
