"""`moalign evaluate`: scores, summary, atomic output and one-line errors with exit code 2."""
import json

import pandas as pd
import pytest

from moalign import Objective, register_objective
from moalign.cli import main
from moalign.data import load_samples

from conftest import REPO

SAMPLES = REPO / "pipelines" / "data" / "samples.jsonl"


def test_six_samples_give_sensible_scores(tmp_path, capsys):
    out = tmp_path / "scores.csv"
    code = main(["evaluate", "--data", str(SAMPLES), "--objectives", "bleu,rouge_l,toxicity,verbosity,distinct_n",
                 "--out", str(out), "--quiet"])
    assert code == 0
    frame = pd.read_csv(out, keep_default_na=False)
    assert len(frame) == 6 and {"prompt", "completion", "bleu", "toxicity"} <= set(frame.columns)
    insult = frame["completion"].str.contains("idiot")
    assert frame.loc[insult, "toxicity"].iloc[0] > 0.5
    assert (frame.loc[~insult, "toxicity"] < 0.5).all()
    empty = frame["completion"] == ""
    assert frame.loc[empty, "verbosity"].iloc[0] == 0 and frame.loc[empty, "bleu"].iloc[0] == 0
    # the faithful multi-reference summary beats the insult on overlap
    assert frame.loc[0, "rouge_l"] > frame.loc[insult, "rouge_l"].iloc[0]
    printed = capsys.readouterr().out
    assert "ci95_low" in printed and "toxicity" in printed


def test_one_objective_twice_under_two_column_names(tmp_path, capsys):
    out = tmp_path / "s.csv"
    assert main(["evaluate", "--data", str(SAMPLES), "--objectives", "words=verbosity,chars=verbosity",
                 "--set", "chars.unit=chars", "--out", str(out), "--quiet"]) == 0
    frame = pd.read_csv(out, keep_default_na=False)
    samples = load_samples(SAMPLES)
    assert frame["words"].tolist() == [len((s["completion"] or "").split()) for s in samples]
    assert frame["chars"].tolist() == [len(s["completion"] or "") for s in samples]
    # the same column twice is not silently merged
    assert main(["evaluate", "--data", str(SAMPLES), "--objectives", "verbosity,verbosity", "--quiet"]) == 2
    assert "column 'verbosity' appears twice" in capsys.readouterr().err


def test_objective_parameters_via_set_and_parquet(tmp_path):
    out = tmp_path / "s.parquet"
    assert main(["evaluate", "--data", str(SAMPLES), "--objectives", "verbosity", "--set", "verbosity.unit=chars",
                 "--out", str(out), "--quiet"]) == 0
    frame = pd.read_parquet(out)
    samples = load_samples(SAMPLES)
    assert frame["verbosity"].tolist() == [len(s["completion"] or "") for s in samples]


def test_csv_input_with_reference_column(tmp_path):
    data = tmp_path / "d.csv"
    pd.DataFrame({"prompt": ["p", "q"], "completion": ["the cat", "a dog"], "reference": ["the cat", "x"],
                  "references": ["", '["a dog", "y"]']}).to_csv(data, index=False)
    samples = load_samples(data)
    assert samples[0]["references"] == ["the cat"] and samples[1]["references"] == ["a dog", "y"]


def run_error(capsys, argv):
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    return err


def test_malformed_json_names_file_and_line(tmp_path, capsys):
    data = tmp_path / "bad.jsonl"
    data.write_text('{"prompt": "p", "completion": "c"}\n{"prompt": "p", completion: c}\n')
    err = run_error(capsys, ["evaluate", "--data", str(data), "--objectives", "verbosity"])
    assert f"{data}:2: malformed JSON" in err


def test_missing_field_empty_file_unknown_objective(tmp_path, capsys):
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"prompt": "p", "completion": "c"}) + "\n")
    assert "objective 'rouge_l' needs the field 'references'" in run_error(
        capsys, ["evaluate", "--data", str(data), "--objectives", "rouge_l"])
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert "no samples" in run_error(capsys, ["evaluate", "--data", str(empty), "--objectives", "verbosity"])
    err = run_error(capsys, ["evaluate", "--data", str(data), "--objectives", "verbosity,blue"])
    assert "unknown objective 'blue'" in err and "bleu" in err
    assert "no such data file" in run_error(capsys, ["evaluate", "--data", str(tmp_path / "nope.jsonl"),
                                                     "--objectives", "verbosity"])
    assert "unknown parameter 'color'" in run_error(
        capsys, ["evaluate", "--data", str(data), "--objectives", "verbosity", "--set", "verbosity.color=red"])


class Exploding(Objective):
    """Fails while scoring, to check that no partial output is left."""

    name = "exploding"

    def _score(self, batch):
        raise RuntimeError("boom")


def test_failed_run_leaves_no_partial_output(tmp_path, capsys):
    register_objective("exploding", Exploding)
    out = tmp_path / "scores.csv"
    out.write_text("previous results\n")
    code = main(["evaluate", "--data", str(SAMPLES), "--objectives", "verbosity,exploding", "--out", str(out), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err == "moalign: error: objective 'exploding' failed: RuntimeError: boom"  # named, one line
    assert out.read_text() == "previous results\n"
    assert [p.name for p in tmp_path.iterdir()] == ["scores.csv"]  # no temp file left behind


def test_atomic_write_keeps_old_file_when_the_write_fails(tmp_path, monkeypatch):
    from moalign.data import write_table

    out = tmp_path / "t.csv"
    write_table(pd.DataFrame({"a": [1]}), out)

    def broken(self, path, **kwargs):
        open(path, "w").write("half")
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_csv", broken)
    with pytest.raises(OSError):
        write_table(pd.DataFrame({"a": [2]}), out)
    assert out.read_text().strip().splitlines() == ["a", "1"]
    assert len(list(tmp_path.iterdir())) == 1
