"""A sample pool killed with SIGKILL mid-way: re-running the search continues the same pool run from
its last whole part, samples only the parts it lacks, and ends with the pool an uninterrupted
search samples."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
from mlflow.tracking import MlflowClient

from moalign import Objective, register_objective
from moalign.pareto.config import SearchConfig
from moalign.pareto.search import run_search
from moalign.pool import CHUNK, read_pool
from moalign.rl.config import RewardConfig, SamplingConfig, TrackingConfig

from rl_helpers import tiny_config, write_prompts

TESTS = Path(__file__).resolve().parent
WORDS = "the a cat dog sat on mat sun rain city park bike lane river tree green blue red one two".split()


class KillSwitch(Objective):
    """Scores 0. With MOALIGN_TEST_KILL set to a folder, kills its own process (SIGKILL, no
    cleanup) when asked to score while that folder holds a whole pool part: mid-pool, after one part."""

    name = "kill_switch"

    def _score(self, batch):
        folder = os.environ.get("MOALIGN_TEST_KILL")
        if folder and list(Path(folder).glob("**/parts/part-*.parquet")):
            os.kill(os.getpid(), 9)
        return [0.0] * len(batch)


register_objective("kill_switch", KillSwitch)


def config(model: str, tmp: Path):
    eval_file = tmp / "eval.jsonl"
    eval_file.write_text("\n".join(json.dumps({"prompt": f"{a} {b}", "references": ["the cat"]})
                                   for a, b in zip(WORDS, reversed(WORDS))))  # 20 prompts: 3 parts of 8
    cfg = tiny_config(model, write_prompts(tmp / "prompts.jsonl"), tmp,
                      reward=RewardConfig(objectives={"good": {"type": "word_share"}}),
                      sampling=SamplingConfig(num_generations=2, prompts_per_step=2, max_new_tokens=5),
                      tracking=TrackingConfig(tracking_uri=f"sqlite:///{tmp / 'mlflow.db'}", experiment="pool"))
    cfg.data.eval, cfg.data.max_eval_prompts = str(eval_file), 20
    cfg.eval_objectives = {"kill": {"type": "kill_switch"}}
    return SearchConfig(train=cfg, strategy="best_of_n", weights=[[1.0]], name="bon", n_bootstrap=100,
                        options={"n": 3}, evaluate_base=False)


KILLED = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    from pathlib import Path
    import test_pool_resume
    from moalign.pareto.search import run_search

    run_search(test_pool_resume.config({model!r}, Path({tmp!r})))
""")


def test_a_pool_killed_mid_way_continues_from_its_last_whole_part(tiny_llama, tmp_path, monkeypatch, one_torch_thread):
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    killed.mkdir()
    whole.mkdir()
    env = {**os.environ, "MOALIGN_TEST_KILL": str(killed / "runs"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", KILLED.format(tests=str(TESTS), model=tiny_llama, tmp=str(killed))],
                          capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == -9, proc.stderr[-2000:]
    client = MlflowClient(f"sqlite:///{killed / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("pool").experiment_id
    (pool_run,) = client.search_runs([experiment], "tags.`moalign.key` = 'pool:eval:s0'")
    assert pool_run.info.status == "RUNNING"
    parts = sorted((killed / "runs" / pool_run.info.run_id / "parts").glob("part-*.parquet"))
    assert len(parts) == 1 and 20 > CHUNK  # one whole part of three, the second never written
    first = parts[0].stat().st_mtime_ns

    import moalign.rl.sampling

    calls = []
    generate = moalign.rl.sampling.generate
    monkeypatch.setattr(moalign.rl.sampling, "generate", lambda *a, **k: calls.append(len(a[2])) or generate(*a, **k))
    resumed = run_search(config(tiny_llama, killed))
    assert calls == [8, 4]  # the two parts it lacked: 8 and 4 prompts, not the first one again
    (again,) = client.search_runs([experiment], "tags.`moalign.key` = 'pool:eval:s0'")
    assert again.info.run_id == pool_run.info.run_id and again.info.status == "FINISHED"
    assert parts[0].stat().st_mtime_ns == first

    uninterrupted = run_search(config(tiny_llama, whole))
    tables = []
    for folder in (killed, whole):
        store = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
        (run,) = store.search_runs([store.get_experiment_by_name("pool").experiment_id], "tags.`moalign.key` = 'pool:eval:s0'")
        tables.append(read_pool(run.data.tags["moalign.pool_path"]))
    cols = ["prompt_index", "sample", "prompt", "completion", "completion_tokens", "good", "kill"]
    pd.testing.assert_frame_equal(tables[0][cols], tables[1][cols])
    assert resumed.policies["good"].tolist() == uninterrupted.policies["good"].tolist()


def test_a_pool_records_whether_each_sample_stopped_by_itself(tiny_llama, tmp_path, one_torch_thread):
    from moalign import get_objective
    from moalign.pool import PoolSpec, build_pool

    search = config(tiny_llama, tmp_path)
    records = [{"prompt": p} for p in ("the cat sat", "a dog was", "rain on the city")]
    frame = build_pool(search.train, PoolSpec("eval", n=8, seed=0), records, {"verbosity": get_objective("verbosity")},
                       tmp_path / "parts", progress=False)
    limit = search.train.sampling.max_new_tokens
    assert frame["stopped"].dtype == bool
    assert frame.loc[frame["completion_tokens"] < limit, "stopped"].all()  # ended early: by their own EOS
    assert (~frame["stopped"]).any() and (frame.loc[~frame["stopped"], "completion_tokens"] == limit).all()  # cut
