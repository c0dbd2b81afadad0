"""Throughput of every offline objective on 2,000 samples, and BLEU/ROUGE beside HF evaluate.

    python benchmarks/bench_objectives.py [--n 2000] [--likelihood-n 200]

Samples are the shipped summaries with varied completions (reference, source, truncations),
grouped four to a prompt. HF evaluate's `sacrebleu` and `rouge` modules are loaded from the hub
when it is reachable; otherwise from local stand-ins written here that call sacrebleu and
rouge-score as those modules do (corpus `compute` per sample for BLEU, `use_aggregator=False`
for ROUGE). Both sides must give the same per-sample numbers; the script checks it.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

LOCAL_MODULES = {
    "sacrebleu": '''
import datasets
import evaluate
import sacrebleu as scb

class Sacrebleu(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(description="local sacrebleu", citation="", inputs_description="",
            features=datasets.Features({"predictions": datasets.Value("string"),
                                        "references": datasets.Sequence(datasets.Value("string"))}))
    def _compute(self, predictions, references, smooth_method="exp", use_effective_order=False):
        refs = [[r[i] for r in references] for i in range(len(references[0]))]
        out = scb.corpus_bleu(predictions, refs, smooth_method=smooth_method, use_effective_order=use_effective_order)
        return {"score": out.score}
''',
    "rouge": '''
import datasets
import evaluate
from rouge_score import rouge_scorer

class Rouge(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(description="local rouge", citation="", inputs_description="",
            features=datasets.Features({"predictions": datasets.Value("string"),
                                        "references": datasets.Sequence(datasets.Value("string"))}))
    def _compute(self, predictions, references, rouge_types=None, use_aggregator=True, use_stemmer=False):
        rouge_types = rouge_types or ["rouge1", "rouge2", "rougeL", "rougeLsum"]
        scorer = rouge_scorer.RougeScorer(rouge_types=rouge_types, use_stemmer=use_stemmer)
        scores = [scorer.score_multi(ref, pred) for ref, pred in zip(references, predictions)]
        return {t: [s[t].fmeasure for s in scores] for t in rouge_types}
''',
}


def make_samples(n: int) -> list[dict]:
    records = [json.loads(line) for line in (REPO / "pipelines/data/summaries.jsonl").read_text().splitlines()]
    out = []
    for i in range(n):
        r = records[(i // 4) % len(records)]
        ref, src = r["references"][0], r["source"]
        variants = [ref, src, " ".join(ref.split()[: max(1, len(ref.split()) // 2)]), src.split(". ")[0] + "."]
        out.append({"prompt": r["prompt"] + f" #{i // 4}", "completion": variants[i % 4], "references": r["references"],
                    "source": src})
    return out


def timed(fn):
    t0 = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - t0


def load_module(name: str, tmp: Path):
    import evaluate

    try:
        return evaluate.load(name), "hub"
    except Exception:
        path = tmp / name / f"{name}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(LOCAL_MODULES[name])
        return evaluate.load(str(path)), "local stand-in"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--likelihood-n", type=int, default=200)
    args = parser.parse_args()

    from moalign import Batch, get_objective

    samples = make_samples(args.n)
    batch = Batch.from_records(samples)
    specs = [("bleu", {}), ("chrf", {}), ("rouge1", {}), ("rouge2", {}), ("rouge_l", {}), ("toxicity", {}),
             ("verbosity", {"unit": "words"}), ("verbosity", {"unit": "tokens"}), ("distinct_n", {}),
             ("self_bleu", {}), ("embedding_diversity", {}), ("likelihood", {})]
    print(f"{'objective':34s} {'samples':>8s} {'seconds':>9s} {'samples/s':>10s}")
    results = {}
    for name, params in specs:
        objective = get_objective(name, **params)
        n = args.likelihood_n if name == "likelihood" else args.n
        sub = Batch.from_records(samples[:n])
        objective.score(Batch.from_records(samples[:8]))  # load models once, outside the timing
        values, seconds = timed(lambda: objective.score(sub))
        label = name + (f"({', '.join(f'{k}={v}' for k, v in params.items())})" if params else "")
        results[label] = values
        print(f"{label:34s} {n:8d} {seconds:9.2f} {n / seconds:10.0f}")

    print("\nBLEU / ROUGE-L beside HF evaluate (same per-sample values required)")
    with tempfile.TemporaryDirectory() as tmp:
        bleu_module, where = load_module("sacrebleu", Path(tmp))
        ours, t_ours = timed(lambda: get_objective("bleu").score(batch))
        theirs, t_theirs = timed(lambda: np.array([
            bleu_module.compute(predictions=[s["completion"]], references=[s["references"]],
                                use_effective_order=True)["score"] for s in samples]))
        assert np.allclose(ours, theirs), "BLEU differs from evaluate's"
        print(f"bleu     moalign {args.n / t_ours:8.0f} samples/s | evaluate ({where}, one compute per sample) "
              f"{args.n / t_theirs:8.0f} samples/s | {t_theirs / t_ours:.1f}x")
        rouge_module, where = load_module("rouge", Path(tmp))
        ours, t_ours = timed(lambda: get_objective("rouge_l").score(batch))
        theirs, t_theirs = timed(lambda: np.array(rouge_module.compute(
            predictions=[s["completion"] for s in samples], references=[s["references"] for s in samples],
            rouge_types=["rougeL"], use_aggregator=False)["rougeL"]))
        assert np.allclose(ours, theirs), "ROUGE-L differs from evaluate's"
        print(f"rouge_l  moalign {args.n / t_ours:8.0f} samples/s | evaluate ({where}, use_aggregator=False) "
              f"{args.n / t_theirs:8.0f} samples/s | {t_theirs / t_ours:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
