"""Using a policy from the front: load_policy for each kind of policy, `moalign generate`,
`moalign export` (a checkpoint plain transformers loads), and adapters that name their base model
by its public name."""
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient
from peft import PeftModel
from transformers import AutoModelForCausalLM

import moalign
from moalign.cli import main
from moalign.models import BUNDLED
from moalign.pareto.soups import AdapterSoup
from moalign.rl.config import ModelConfig, OptimConfig
from moalign.rl.policy import peft_wrapping
from moalign.scoring import summarize
from moalign.tracking import read_table

from rl_helpers import PROMPTS, tiny_config, write_prompts
from test_use_search import OBJECTIVES, finished_searches

IDS = torch.tensor([[6, 7, 8, 9, 10, 11], [12, 13, 14, 15, 16, 17]])
SOUP = "use/soups@0.5,0.5"


@pytest.fixture(scope="module")
def front(tmp_path_factory, tiny_llama):
    return finished_searches(tmp_path_factory, tiny_llama)


def logits(model):
    with torch.no_grad():
        return model(IDS).logits


def greedy(model, tokenizer, prompts, n=6):
    batch = tokenizer(prompts, return_tensors="pt", padding=True)
    out = model.generate(**batch, max_new_tokens=n, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    return [t.strip() for t in tokenizer.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)]


def adapter_dirs(front):
    runs = front.soups.runs.set_index("run_id")
    return [runs.loc[front.trained, "adapter_dir"], runs.loc[front.other, "adapter_dir"]]


def test_load_policy_rebuilds_trained_soup_and_base_policies(front):
    base = AutoModelForCausalLM.from_pretrained(front.model).eval()
    with peft_wrapping():
        trained = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(front.model), adapter_dirs(front)[0]).eval()

    model, tokenizer = moalign.load_policy(front.trained, tracking_uri=front.uri)
    assert not model.training and tokenizer.padding_side == "left" and tokenizer.pad_token is not None
    torch.testing.assert_close(logits(model), logits(trained), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(logits(model), logits(base), atol=1e-3)  # the adapter is in
    # the run another search reused is the same policy
    torch.testing.assert_close(logits(moalign.load_policy("use/grid@1,0", front.uri)[0]), logits(trained),
                               atol=1e-5, rtol=1e-5)

    soup = AdapterSoup(ModelConfig(name=front.model, lora_r=8), adapter_dirs(front))
    with soup.mixed([0.5, 0.5]) as mixed:
        expected = logits(mixed)
    torch.testing.assert_close(logits(moalign.load_policy(SOUP, front.uri)[0]), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(logits(moalign.load_policy("use/soups@base", front.uri)[0]), logits(base))


def test_loaded_policy_generates_batches_as_single_prompts(front):
    """Left padding: a short prompt batched with a long one continues from its own last token
    (padded on the right, it would continue from padding)."""
    model, tokenizer = moalign.load_policy(SOUP, front.uri)
    prompts = ["the cat sat on the mat and the dog", "a", "news report", "one two three four"]
    assert greedy(model, tokenizer, prompts) == [greedy(model, tokenizer, [p])[0] for p in prompts]


def test_load_policy_uses_the_logged_adapter_when_the_local_folder_is_gone(front, tmp_path):
    expected = logits(moalign.load_policy(front.other, front.uri)[0])
    local = adapter_dirs(front)[1]
    shutil.move(local, tmp_path / "moved")
    try:
        torch.testing.assert_close(logits(moalign.load_policy(front.other, front.uri)[0]), expected)
    finally:
        shutil.move(tmp_path / "moved", local)


def test_adapter_names_the_bundled_model_and_loads_after_the_cache_moved(tiny_llama, tmp_path, monkeypatch):
    """The adapter records `smollm2-135m-instruct`, not the cache folder it was loaded from."""
    old, new = tmp_path / "cache-old", tmp_path / "cache-new"
    shutil.copytree(tiny_llama, old / BUNDLED)  # stands in for the dequantised bundled model
    monkeypatch.setenv("MOALIGN_CACHE", str(old))
    data = write_prompts(tmp_path / "prompts.jsonl")
    adapter = moalign.train(tiny_config(BUNDLED, data, tmp_path, optim=OptimConfig(steps=1, lr=2e-2))).adapter_dir
    assert json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"] == BUNDLED
    assert str(old) not in (adapter / "README.md").read_text()
    before = logits(moalign.load_policy(str(adapter))[0])
    shutil.move(old, new)
    monkeypatch.setenv("MOALIGN_CACHE", str(new))
    torch.testing.assert_close(logits(moalign.load_policy(str(adapter))[0]), before)


def eval_samples(front, run_id):
    return read_table(MlflowClient(front.uri), run_id, "eval_samples.json")


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_generate_samples_as_held_out_evaluation_unless_overridden(front, tmp_path, capsys):
    out = tmp_path / "out.jsonl"
    assert main(["generate", "--run", SOUP, "--data", front.data, "--out", str(out), "--tracking-uri", front.uri,
                 "--quiet"]) == 0
    rows = read_jsonl(out)
    assert [r["prompt"] for r in rows] == PROMPTS and {r["generation"] for r in rows} == {0}
    assert rows[0]["references"] == ["the cat sat on the mat"]  # input fields kept: `moalign evaluate` reads it
    # the run's own settings (greedy, max_new_tokens 8): its held-out completions come back
    held_out = eval_samples(front, front.soup)
    by_prompt = {r["prompt"]: r["completion"] for r in rows}
    assert [by_prompt[p] for p in held_out["prompt"]] == held_out["completion"].tolist()

    assert main(["generate", "--run", SOUP, "--data", front.data, "--out", str(out), "--tracking-uri", front.uri,
                 "--set", "sampling.eval_num_generations=2", "--set", "sampling.eval_temperature=1.0",
                 "--set", "sampling.max_new_tokens=3"]) == 0
    rows = read_jsonl(out)
    assert len(rows) == 2 * len(PROMPTS) and [r["generation"] for r in rows[:2]] == [0, 1]
    assert max(len(r["completion"].split()) for r in rows) <= 3
    assert f"wrote {len(rows)} rows" in capsys.readouterr().out


@pytest.mark.parametrize("content, extra, message", [
    ('{"prompt": "a"}\n{"prompt": \n', [], "prompts.jsonl:2: malformed JSON"),
    ('{"text": "a"}\n', [], "record 1 has no 'prompt'"),
    ('{"prompt": "a"}\n', ["--set", "sampling.temperature=0.5"], "generate takes sampling.KEY=VALUE with KEY one of"),
    ('{"prompt": "a"}\n', ["--set", "optim.lr=1"], "generate takes sampling.KEY=VALUE"),
    ('{"prompt": "a"}\n', ["--set", "sampling.eval_temperature=-1"], "sampling.eval_temperature must be >= 0"),
    ('{"prompt": "a"}\n', ["--run", "use/soups@0.2,0.8"], "has no policy at weights 0.2,0.8"),
    ('{"prompt": "a"}\n', ["--out", "{tmp}/out.csv"], "output must end in .jsonl"),
])
def test_generate_bad_input_is_one_line_and_writes_nothing(front, tmp_path, capsys, content, extra, message):
    data = tmp_path / "prompts.jsonl"
    data.write_text(content)
    argv = ["generate", "--run", SOUP, "--data", str(data), "--out", str(tmp_path / "out.jsonl"),
            "--tracking-uri", front.uri] + [x.format(tmp=tmp_path) for x in extra]  # a repeated flag: the last wins
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prompts.jsonl"]


PLAIN = """
import json, sys
sys.modules["peft"] = sys.modules["moalign"] = None  # importing either fails from here on
from transformers import AutoModelForCausalLM, AutoTokenizer
model = AutoModelForCausalLM.from_pretrained(sys.argv[1]).eval()
tokenizer = AutoTokenizer.from_pretrained(sys.argv[1])
batch = tokenizer(json.loads(sys.argv[2]), return_tensors="pt", padding=True)
out = model.generate(**batch, max_new_tokens=6, do_sample=False)
print(json.dumps([t.strip() for t in tokenizer.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)]))
"""


def test_export_is_a_checkpoint_plain_transformers_loads(front, tmp_path):
    out = tmp_path / "soup-export"
    assert main(["export", "--run", SOUP, "--out", str(out), "--tracking-uri", front.uri]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["soup-export"]  # no temporary folder left
    assert not (out / "adapter_config.json").exists()
    prompts = ["the cat sat on the mat and the dog", "a", "news report"]
    # -I: no PYTHONPATH, no user site, not the working directory; peft and moalign made unimportable
    plain = subprocess.run([sys.executable, "-I", "-c", PLAIN, str(out), json.dumps(prompts)], capture_output=True,
                           text=True, timeout=180, cwd=tmp_path, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert plain.returncode == 0, plain.stderr[-2000:]
    model, tokenizer = moalign.load_policy(SOUP, front.uri)
    assert json.loads(plain.stdout.splitlines()[-1]) == greedy(model, tokenizer, prompts)
    card = (out / "README.md").read_text()
    assert f"rewarded soup: the endpoint runs `{front.trained}`, `{front.other}`" in card
    assert "| reward weights | good 0.5, bad 0.5 (mixing weights" in card


def test_export_model_card_states_what_the_policy_is_and_how_it_scored(front, tmp_path):
    out = tmp_path / "export"
    out.mkdir()  # an empty folder is fine
    assert main(["export", "--run", "use/soups@1,0", "--out", str(out), "--tracking-uri", front.uri]) == 0
    _, front_matter, body = (out / "README.md").read_text().split("---\n", 2)
    meta = yaml.safe_load(front_matter)
    assert meta["base_model"] == front.model and meta["library_name"] == "transformers"
    assert {"moalign", "rl", "rloo"} <= set(meta["tags"])
    # the weights follow the objectives' order (good, bad), not config.yaml's sorted keys
    for fact in (f"| base model | `{front.model}` |", "| reward weights | good 1, bad 0 |", "| scalarizer | weighted_sum",
                 "| algorithm | rloo", "| steps | 2, lr 0.02", f"| training data | `{front.data}`", front.trained):
        assert fact in body, fact
    summary = summarize(eval_samples(front, front.trained)[["good", "bad"]].astype(float), OBJECTIVES)
    for objective, row in summary.iterrows():
        assert f"| {objective} | maximize | {row['mean']:.4g} | [{row['ci95_low']:.4g}, {row['ci95_high']:.4g}] |" in body


def test_export_refuses_a_folder_that_is_not_empty(front, tmp_path, capsys):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["export", "--run", SOUP, "--out", str(out), "--tracking-uri", front.uri]) == 2
    assert "exists and is not an empty folder" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
