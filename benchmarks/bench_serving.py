"""What one request to a whole-front endpoint costs (`moalign register --search`): a weight vector
seen before (cache hit), a new one (the soup is mixed and merged first), and, side by side in the
same run, the per-policy path the endpoint replaces: `moalign.load_policy` of that point, then
generation.

    python benchmarks/bench_serving.py --search bench-summaries/soups --tracking-uri sqlite:///bench-summaries.db
    python benchmarks/bench_serving.py --tiny        # a soups front of a tiny model built here (seconds)

Prints the median seconds of each path over `--repeats` requests of `--prompts` prompts.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def tiny_front(folder: Path) -> tuple[str, str]:
    """A soups search of a randomly initialised tiny Llama, tracked in `folder` (no download)."""
    sys.path.insert(0, str(REPO / "tests"))
    from rl_helpers import tiny_config, write_prompts
    from tiny import make_tiny_llama

    from moalign.pareto.config import SearchConfig
    from moalign.pareto.search import run_search
    from moalign.rl.config import RewardConfig, SamplingConfig, TrackingConfig

    uri = f"sqlite:///{folder / 'mlflow.db'}"
    cfg = tiny_config(str(make_tiny_llama(folder / "llama")), write_prompts(folder / "p.jsonl"), folder,
                      reward=RewardConfig(objectives={"good": {"type": "word_share"}, "bad": {"type": "word_share", "word": "bad"}}),
                      sampling=SamplingConfig(num_generations=2, prompts_per_step=2, max_new_tokens=8),
                      tracking=TrackingConfig(tracking_uri=uri, experiment="bench-serving"))
    cfg.optim.steps = 2
    run_search(SearchConfig(train=cfg, strategy="soups", weights=[[1, 0], [0.5, 0.5], [0, 1]], name="soups",
                            n_bootstrap=100))
    return "bench-serving/soups", uri


def seconds(call, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--search", help="EXPERIMENT/SEARCH of a finished soups search")
    parser.add_argument("--tracking-uri")
    parser.add_argument("--tiny", action="store_true", help="build a tiny soups front here instead")
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    import pandas as pd

    from moalign.generation import generate_rows
    from moalign.policies import find_policy, front_policies, load_policy
    from moalign.serving import FrontServer, build_front

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        search, uri = tiny_front(tmp) if args.tiny else (args.search, args.tracking_uri)
        if not search:
            parser.error("give --search EXPERIMENT/SEARCH or --tiny")
        build_front(search, tmp / "front", uri)
        server = FrontServer(tmp / "front", cache_size=64)
        records = pd.DataFrame({"prompt": [f"Summarize: item {i} of the council's agenda was approved." for i in range(args.prompts)]})
        names = server.names
        point = front_policies(search, uri)
        mid = [w for w in point["weights"] if isinstance(w, str) and "1.0000" not in w and "0.0000" not in w]
        at = [float(x) for x in mid[0].split(",")] if mid else [1.0 / len(names)] * len(names)
        fresh = iter([[0.05 + 0.9 * k / 100, 1 - 0.05 - 0.9 * k / 100] for k in range(100)])

        def new_weights():  # a weight vector no request asked for before: mix, merge, generate
            server.answer(records, {"weights": dict(zip(names, next(fresh)))})

        server.answer(records, {"weights": dict(zip(names, at))})  # warm: load, first merge
        hit = seconds(lambda: server.answer(records, {"weights": dict(zip(names, at))}), args.repeats)
        miss = seconds(new_weights, args.repeats)
        record = find_policy(f"{search}@{','.join(f'{w:g}' for w in at)}", uri)

        def per_policy():
            model, tokenizer = load_policy(f"{search}@{','.join(f'{w:g}' for w in at)}", uri)
            generate_rows(model, tokenizer, records.to_dict("records"), record.config.sampling, progress=False)

        reload = seconds(per_policy, args.repeats)
    print(f"front {search}: {args.prompts} prompts a request, median of {args.repeats}")
    print(f"  cache hit (a weight vector asked for before):   {hit:.3f} s")
    print(f"  new weight vector (mix + merge + generate):     {miss:.3f} s  (+{miss - hit:.3f} s to merge)")
    print(f"  per-policy path (load_policy + generate):       {reload:.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
