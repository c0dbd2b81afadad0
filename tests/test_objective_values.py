"""Each objective against an independent computation: the library's own call, or a hand one."""
import numpy as np
import pytest
import torch

from moalign import Batch, MoalignError, get_objective, score

REFS = [["the cat sat on the mat", "a cat was on the mat"], ["rain fell on the city"], ["x"]]
HYPS = ["the cat sat on a mat", "heavy rain fell in the city today", ""]
BATCH = Batch(prompts=["p1", "p2", "p3"], completions=HYPS, references=REFS)


def test_bleu_and_chrf_equal_sacrebleu():
    import sacrebleu

    bleu = get_objective("bleu").score(BATCH)
    chrf = get_objective("chrf").score(BATCH)
    for i, (h, r) in enumerate(zip(HYPS, REFS)):
        assert bleu[i] == pytest.approx(sacrebleu.sentence_bleu(h, r).score)
        assert chrf[i] == pytest.approx(sacrebleu.sentence_chrf(h, r).score)
    assert bleu[0] > bleu[2] == 0.0


@pytest.mark.parametrize("name,key", [("rouge1", "rouge1"), ("rouge2", "rouge2"), ("rouge_l", "rougeL")])
@pytest.mark.parametrize("stem", [False, True])
def test_rouge_equals_rouge_score_multi(name, key, stem):
    from rouge_score import rouge_scorer

    values = get_objective(name, use_stemmer=stem).score(BATCH)
    scorer = rouge_scorer.RougeScorer([key], use_stemmer=stem)
    expected = [scorer.score_multi(r, h)[key].fmeasure for h, r in zip(HYPS, REFS)]
    np.testing.assert_allclose(values, expected)
    # with two references the best one counts: never lower than against the first alone
    assert values[0] >= scorer.score(REFS[0][0], HYPS[0])[key].fmeasure


def test_likelihood_equals_hand_logprob(tiny_llama):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    batch = Batch(prompts=["the cat", "a dog is", "sun"], completions=["sat on the mat", "good", ""])
    mean = get_objective("likelihood", model=tiny_llama).score(batch)
    total = get_objective("likelihood", model=tiny_llama, reduce="sum", batch_size=1).score(batch)
    tok = AutoTokenizer.from_pretrained(tiny_llama)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()
    for i in range(2):
        p = tok(batch.prompts[i])["input_ids"]
        c = tok(batch.completions[i], add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([p + c])).logits[0], -1)
        # token p+j is predicted at position p+j-1; prompt tokens are not counted
        hand = sum(logp[len(p) + j - 1, t].item() for j, t in enumerate(c))
        assert total[i] == pytest.approx(hand, abs=1e-4)
        assert mean[i] == pytest.approx(hand / len(c), abs=1e-4)
    # empty completion: the model's log-probability of ending right after the prompt
    with torch.no_grad():
        eos = torch.log_softmax(model(torch.tensor([tok("sun")["input_ids"]])).logits[0, -1], -1)[tok.eos_token_id]
    assert mean[2] == pytest.approx(eos.item(), abs=1e-4) and total[2] == pytest.approx(eos.item(), abs=1e-4)
    assert mean[2] < 0


def test_factuality_equals_hand_summac(tiny_nli):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    batch = Batch(prompts=["s", "s", "s"], completions=["the cat sat. it was good.", "dog", ""],
                  sources=["the cat sat on the mat. the sun was green. rain", "the dog", "x"])
    got = get_objective("factuality", model=tiny_nli).score(batch)
    got_e = get_objective("factuality", model=tiny_nli, mode="e").score(batch)
    tok = AutoTokenizer.from_pretrained(tiny_nli)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_nli).eval()

    def probs(premise, hypothesis):
        with torch.no_grad():
            return torch.softmax(model(**tok(premise, hypothesis, return_tensors="pt")).logits[0], -1)

    chunks = [["the cat sat on the mat.", "the sun was green.", "rain"], ["the dog"]]
    sentences = [["the cat sat.", "it was good."], ["dog"]]
    for i in range(2):  # labels: 0 entailment, 2 contradiction
        ec = [max(probs(c, s)[0] - probs(c, s)[2] for c in chunks[i]) for s in sentences[i]]
        e = [max(probs(c, s)[0] for c in chunks[i]) for s in sentences[i]]
        assert got[i] == pytest.approx(float(np.mean(ec)), abs=1e-5)
        assert got_e[i] == pytest.approx(float(np.mean(e)), abs=1e-5)
    # an empty completion supports nothing: the lowest value of each mode
    assert got[2] == -1.0 and got_e[2] == 0.0


def test_factuality_finds_labels_by_name_whatever_their_order(tmp_path):
    from tiny import make_tiny_nli

    a = make_tiny_nli(tmp_path / "a", labels=("entailment", "neutral", "contradiction"), seed=1)
    b = make_tiny_nli(tmp_path / "b", labels=("CONTRADICTION", "NEUTRAL", "ENTAILMENT"), seed=1)
    # b is a with its output rows reversed: same model, other label order
    from transformers import AutoModelForSequenceClassification

    mb = AutoModelForSequenceClassification.from_pretrained(b)
    ma = AutoModelForSequenceClassification.from_pretrained(a)
    mb.classifier.weight.data = ma.classifier.weight.data.flip(0)
    mb.classifier.bias.data = ma.classifier.bias.data.flip(0)
    mb.save_pretrained(b)
    batch = Batch(prompts=["p"], completions=["the cat sat."], sources=["the cat sat on the mat."])
    va = get_objective("factuality", model=str(a)).score(batch)
    vb = get_objective("factuality", model=str(b)).score(batch)
    np.testing.assert_allclose(va, vb, atol=1e-6)


def test_factuality_without_nli_labels_is_a_clear_error(tmp_path):
    from tiny import make_tiny_nli

    path = make_tiny_nli(tmp_path / "m", labels=("LABEL_0", "LABEL_1", "LABEL_2"))
    with pytest.raises(MoalignError, match="entail"):
        get_objective("factuality", model=str(path)).score(Batch(prompts=["p"], completions=["a"], sources=["a"]))


def test_toxicity_profanity_backend_flags_insults():
    from profanity_check import predict_prob

    texts = ["You are a stupid idiot and worthless trash.", "The library opens at nine."]
    values = get_objective("toxicity").score(Batch(prompts=["p", "q"], completions=texts))
    np.testing.assert_allclose(values, predict_prob(texts))
    assert values[0] > 0.5 > values[1]
    assert get_objective("toxicity").direction == "minimize"


def test_toxicity_hf_backend_picks_toxic_label_by_name(tmp_path):
    from tiny import make_tiny_nli
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = str(make_tiny_nli(tmp_path / "tox", labels=("non-toxic", "toxic")))
    texts = ["bad dog", "good cat"]
    values = get_objective("toxicity", backend="hf", model=path).score(Batch(prompts=["p", "q"], completions=texts))
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path).eval()
    with torch.no_grad():
        expected = torch.softmax(model(**tok(texts, return_tensors="pt", padding=True)).logits, -1)[:, 1]
    np.testing.assert_allclose(values, expected.numpy(), atol=1e-6)


def test_verbosity_units_and_target(tiny_llama):
    batch = Batch(prompts=["p"] * 3, completions=["one two three", "", "the cat sat"])
    np.testing.assert_array_equal(get_objective("verbosity").score(batch), [3, 0, 3])
    np.testing.assert_array_equal(get_objective("verbosity", unit="chars").score(batch), [13, 0, 11])
    np.testing.assert_array_equal(get_objective("verbosity", target=2).score(batch), [1, 2, 1])
    tokens = get_objective("verbosity", unit="tokens", tokenizer=tiny_llama).score(batch)
    np.testing.assert_array_equal(tokens, [3, 0, 3])  # the tiny tokenizer is word-level


def test_distinct_n_by_hand():
    # bigrams of the group: (a b) (b a) (a b) | (a b) (b c): 3 unique of 5
    batch = Batch(prompts=["p", "p", "q"], completions=["a b a b", "a b c", "x y"])
    np.testing.assert_allclose(get_objective("distinct_n", n=2).score(batch), [0.6, 0.6, 1.0])


def test_self_bleu_and_embedding_diversity_rank_groups():
    same = ["the cat sat on the mat today", "the cat sat on the mat today"]
    varied = ["the cat sat on the mat today", "stock markets fell sharply after the announcement"]
    batch = Batch(prompts=["s", "s", "v", "v", "alone"], completions=same + varied + ["single"])
    sb = get_objective("self_bleu").score(batch)
    assert sb[0] == pytest.approx(100.0) and sb[2] < 20 and sb[4] == 0.0
    ed = get_objective("embedding_diversity").score(batch)
    assert abs(ed[0]) < 1e-5 and ed[2] > 0.3 and ed[4] == 0.0
    assert get_objective("self_bleu").direction == "minimize"


def test_evaluate_adapter_matches_module(word_overlap_module):
    obj = get_objective("evaluate", path=word_overlap_module, key="overlap", single_reference=True)
    batch = Batch(prompts=["p", "q"], completions=["a b c", "x"], references=[["a b"], ["y"]])
    np.testing.assert_allclose(obj.score(batch), [2 / 3, 0.0])
    with pytest.raises(MoalignError, match="no key 'nope'"):
        get_objective("evaluate", path=word_overlap_module, key="nope", single_reference=True).score(batch)


def test_score_returns_one_column_per_objective_with_aliases():
    frame = score([{"prompt": "p", "completion": "one two"}],
                  {"words": {"type": "verbosity"}, "chars": {"type": "verbosity", "unit": "chars"}})
    assert list(frame.columns) == ["words", "chars"]
    assert frame.iloc[0].tolist() == [2.0, 7.0]


def test_likelihood_with_shared_prompts_equals_one_sample_at_a_time(tiny_llama):
    prompts = ["the cat", "the cat", "a dog is very", "the cat", "sun"]
    completions = ["sat on the mat", "was good", "good", "", "is green and blue"]
    batch = Batch(prompts=prompts, completions=completions)
    together = get_objective("likelihood", model=tiny_llama, reduce="sum", batch_size=5).score(batch)
    alone = [get_objective("likelihood", model=tiny_llama, reduce="sum").score(Batch(prompts=[p], completions=[c]))[0]
             for p, c in zip(prompts, completions)]
    np.testing.assert_allclose(together, alone, atol=1e-4)
    assert together[3] < 0  # the empty completion costs log p(EOS | prompt)


def test_self_bleu_calls_empty_copies_identical_not_diverse():
    # BLEU of "" against [""] is 0, which would make two empty answers perfectly diverse
    batch = Batch(prompts=["e", "e", "m", "m"], completions=["", "", "", "the cat sat on the mat"])
    np.testing.assert_array_equal(get_objective("self_bleu").score(batch), [100.0, 100.0, 0.0, 0.0])


def test_reference_similarity_ranks_meaning_not_shared_characters():
    """MiniLM cosine to the closest reference: a copy is 1, a paraphrase sharing few words scores
    above a sentence sharing many words but another meaning, and the best of several references counts."""
    batch = Batch(prompts=["p"] * 4,
                  completions=["The library will open late on Fridays.", "On Fridays the library stays open longer.",
                               "The library will close early on Mondays for repairs.", ""],
                  references=[["The library will open late on Fridays."], ["The library will open late on Fridays."],
                              ["The library will open late on Fridays."], ["The library will open late on Fridays."]])
    copy, paraphrase, other, empty = get_objective("reference_similarity").score(batch)
    assert copy == pytest.approx(1.0, abs=1e-5)
    assert paraphrase > other > empty and paraphrase > 0.7
    several = Batch(prompts=["p"], completions=["On Fridays the library stays open longer."],
                    references=[["Bananas are yellow.", "The library will open late on Fridays."]])
    assert get_objective("reference_similarity").score(several)[0] == pytest.approx(paraphrase, abs=1e-5)
