"""Does a front hold on real news it never saw? Every policy of a finished search answers real news
articles, and its reference-free scores there are set beside its held-out scores.

    pip install gensim            # only for its test data: the Lee corpus (see below)
    python benchmarks/real_news.py --search quickstart/rejection --tracking-uri sqlite:///mlflow.db

The texts: the Lee corpus (Lee, Pincombe & Welsh, 2005), 50 news articles of the Australian
Broadcasting Corporation, which gensim ships as test data (`gensim/test/test_data/lee.cor`); read
from the installed package, not copied here. They are real news, longer than the quickstart's texts
(each a few sentences), and no part of moalign's data. They have no reference summaries, so chrF
and ROUGE cannot be computed on them: what is measured is what needs only the source and the
completion, which is where the quickstart's failure modes show: length (verbosity, words), copying
(extractive density and coverage, novel bigrams), fluency under the base model (likelihood), and
toxicity. Each policy answers with the pipeline's `max_new_tokens` and with `--long-tokens` (96),
so that a length cap cannot hide a policy that keeps writing.

For every policy and seed: the same prompt template as the quickstart ("Summarize in one sentence:
<text>"), sampled as the search's held-out evaluation sampled (greedy by default; its chat template). Means come with 95% bootstrap
intervals over articles and seeds (`moalign.pareto.uncertainty.PolicyScores`, the front's own).
"Holds its order" is checked per objective that the front was scored on and that can be measured
here: Kendall's tau between the policies' held-out means and their real-news means, and whether
the two extremes' real-news intervals are apart.

Writes `--out`/real_news.csv (one row a policy and cap) and real_news.md, and prints the table.
"""
from __future__ import annotations

import argparse
import sys
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

TEMPLATE = "Summarize in one sentence: {text}"
# reference-free objectives: column -> (type, params)
MEASURES = {
    "verbosity": ("verbosity", {"unit": "words"}),
    "density": ("density", {}),
    "coverage": ("coverage", {}),
    "novel_ngrams": ("novel_ngrams", {}),
    "likelihood": ("likelihood", {}),
    "toxicity": ("toxicity", {}),
}


def articles(n: int, corpus: str | None = None) -> list[dict]:
    """The first `n` articles of `corpus` (a text file, one article a line; default the Lee corpus
    from gensim's test data) as records (prompt, source)."""
    if corpus is not None:
        text = Path(corpus).read_text(encoding="utf-8")
        return _records(text, n)
    try:
        corpus = resources.files("gensim") / "test" / "test_data" / "lee.cor"
    except ModuleNotFoundError:
        raise SystemExit("real_news.py: the Lee corpus comes with gensim's test data: pip install gensim") from None
    try:
        text = corpus.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        raise SystemExit(f"real_news.py: this gensim has no {corpus} (its test data): reinstall gensim from PyPI") from None
    return _records(text, n)


def _records(text: str, n: int) -> list[dict]:
    lines = [line.strip() for line in text.splitlines() if line.strip()][:n]
    return [{"prompt": TEMPLATE.format(text=a), "source": a} for a in lines]


def policy_runs(search: str, tracking_uri: str | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(one row a (policy, seed): ref for load_policy, role, weights, seed; the search's front table)."""
    from moalign.policies import front_policies

    front = front_policies(search, tracking_uri)
    rows = []
    for _, p in front.iterrows():
        seeds = [int(s) for s in str(p["seeds"]).split(",")] if p["role"] != "base" else [0]
        for seed in seeds:
            ref = p["ref"] if p["role"] == "base" else f"{p['ref']}:s{seed}"
            weights = "" if p["role"] == "base" else p["weights"]  # as a search's runs table has it (not NaN)
            rows.append({"ref": ref, "role": p["role"], "weights": weights, "seed": seed})
    return pd.DataFrame(rows), front


def score_policy(ref: str, records: list[dict], train_config, caps: list[int], tracking_uri: str | None,
                 objectives) -> dict[int, pd.DataFrame]:
    """Per-article scores of policy `ref`'s completions at each length cap (the model loaded once),
    sampled as the search's held-out evaluation sampled them (its chat template and eval settings)."""
    import dataclasses

    import moalign
    from moalign.generation import generate_rows
    from moalign.objective import Batch

    model, tokenizer = moalign.load_policy(ref, tracking_uri=tracking_uri)
    out = {}
    for tokens in caps:
        sampling = dataclasses.replace(train_config.sampling, max_new_tokens=tokens)
        rows = generate_rows(model, tokenizer, records, sampling, train_config.model.use_chat_template, progress=False)
        batch = Batch(prompts=[r["prompt"] for r in rows], completions=[r["completion"] for r in rows],
                      sources=[r["source"] for r in rows])
        scores = moalign.score(batch, objectives)
        scores.insert(0, "prompt", [r["prompt"] for r in rows])
        scores["completion"] = [r["completion"] for r in rows]
        out[tokens] = scores
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--search", default="quickstart/rejection", help="EXPERIMENT/SEARCH of a finished search")
    parser.add_argument("--tracking-uri", default=None)
    parser.add_argument("--articles", type=int, default=50)
    parser.add_argument("--corpus", default=None, help="a text file, one article a line (default: the Lee corpus)")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="default: the search's own")
    parser.add_argument("--long-tokens", type=int, default=96)
    parser.add_argument("--out", default="real-news")
    parser.add_argument("--tabulate", metavar="SAMPLES", default=None,
                        help="rebuild the tables from an earlier run's real_news_samples.jsonl, generating nothing")
    args = parser.parse_args(argv)

    from scipy.stats import kendalltau
    from tqdm.auto import tqdm

    import moalign
    from moalign.pareto.uncertainty import TAIL, PolicyScores
    from moalign.policies import find_policy
    from moalign.reports.labels import interval

    runs, front = policy_runs(args.search, args.tracking_uri)
    train_config = find_policy(runs["ref"].iloc[-1], args.tracking_uri).config
    cap = args.max_new_tokens or train_config.sampling.max_new_tokens
    objectives = {name: {"type": kind, **params} for name, (kind, params) in MEASURES.items()}
    objectives["likelihood"]["model"] = train_config.model.name  # fluency under the search's own base model
    moalign.build_objectives(objectives)  # a bad objective fails before any model loads
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    saved = pd.read_json(args.tabulate, lines=True) if args.tabulate else None
    caps = list(dict.fromkeys(saved["max_new_tokens"] if saved is not None else [cap, args.long_tokens]))
    if saved is None:
        records = articles(args.articles, args.corpus)
        scored_at = {ref: score_policy(ref, records, train_config, caps, args.tracking_uri, objectives)
                     for ref in tqdm(runs["ref"], desc="policies", unit="policy")}
        saved = pd.concat([scores.assign(ref=ref, max_new_tokens=tokens)
                           for ref, by_cap in scored_at.items() for tokens, scores in by_cap.items()], ignore_index=True)
        saved.to_json(out / "real_news_samples.jsonl", orient="records", lines=True)
    tables = []
    for tokens in caps:
        per_run = {ref: saved[(saved["max_new_tokens"] == tokens) & (saved["ref"] == ref)]
                   .drop(columns=["ref", "max_new_tokens"]).reset_index(drop=True) for ref in runs["ref"]}
        means = runs.assign(key=runs["ref"], run_id=runs["ref"],
                            **{o: [per_run[r][o].mean() for r in runs["ref"]] for o in MEASURES})
        scored = PolicyScores(means, per_run, list(MEASURES))
        low, high = np.nanpercentile(scored.bootstrap(), [TAIL, 100 - TAIL], axis=0)  # over articles and seeds
        table = scored.table.assign(max_new_tokens=tokens)
        for m, o in enumerate(MEASURES):
            table[f"{o}_ci_low"], table[f"{o}_ci_high"] = low[:, m], high[:, m]
        tables.append(table)
    result = pd.concat(tables, ignore_index=True)
    result.to_csv(out / "real_news.csv", index=False)

    source = args.corpus or (args.tabulate or "the Lee corpus")
    n_articles = len(next(iter(per_run.values())))
    lines = [f"# {args.search} on {n_articles} news articles ({source})", ""]
    for tokens, table in result.groupby("max_new_tokens", sort=False):
        lines += [f"## {tokens} new tokens", "", "| policy | " + " | ".join(MEASURES) + " |",
                  "|---" * (len(MEASURES) + 1) + "|"]
        for _, row in table.iterrows():
            name = "base model" if row["role"] == "base" else f"{row['role']} {row['weights']}"
            cells = [interval(row[o], row[f"{o}_ci_low"], row[f"{o}_ci_high"]) for o in MEASURES]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    # order: held-out means (front.csv) against real-news means, per objective scored in both
    held = front.assign(weights=front["weights"].fillna("")).set_index(["role", "weights"])
    first = result[result["max_new_tokens"] == cap].set_index(["role", "weights"])
    trained = first[first.index.get_level_values("role") != "base"]
    lines += ["## Order against the held-out evaluation", ""]
    for o in [o for o in MEASURES if o in held.columns]:
        tau = float(kendalltau(held.loc[trained.index, o], trained[o]).statistic)
        lines.append(f"- {o}: Kendall tau {tau:+.2f} over {len(trained)} trained policies")
    ends = trained.reset_index()
    ends = ends[ends["weights"].map(lambda w: sorted(float(x) for x in w.split(",")) == [0.0, 1.0])]
    if len(ends) == 2:
        a, b = ends.iloc[0], ends.iloc[1]
        for o in MEASURES:
            apart = a[f"{o}_ci_high"] < b[f"{o}_ci_low"] or b[f"{o}_ci_high"] < a[f"{o}_ci_low"]
            lines.append(f"- extremes {a['weights']} vs {b['weights']} on {o}: {a[o]:.2f} vs {b[o]:.2f}, "
                         f"intervals {'apart' if apart else 'OVERLAP'}")
    text = "\n".join(lines) + "\n"
    (out / "real_news.md").write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
