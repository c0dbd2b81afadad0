"""Computing each group's prompt once gives the log-probs and gradients of full sequences."""
import torch

from moalign.rl.sampling import completion_logprobs, generate, grouped_completion_logprobs


def test_grouped_logprobs_and_gradients_match_full_sequences(tiny_llama):
    from tiny import tiny_lora

    model, tok = tiny_lora(tiny_llama)
    rollout = generate(model, tok, ["the cat sat on the", "a dog", "rain"], n=3, max_new_tokens=7, seed=1)
    ids, attn, mask = rollout.input_ids, rollout.attention_mask, rollout.completion_mask.float()
    T = rollout.n_completion

    full, full_ent = completion_logprobs(model, ids, attn, T, temperature=0.7, with_entropy=True)
    (full * mask).sum().backward()
    full_grads = [p.grad.clone() for p in model.parameters() if p.requires_grad]
    model.zero_grad()
    shared, shared_ent = grouped_completion_logprobs(model, ids, attn, T, 3, temperature=0.7, with_entropy=True)
    (shared * mask).sum().backward()
    shared_grads = [p.grad.clone() for p in model.parameters() if p.requires_grad]

    m = mask.bool()
    torch.testing.assert_close(shared[m], full[m], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(shared_ent[m], full_ent[m], atol=1e-5, rtol=1e-5)
    for a, b in zip(shared_grads, full_grads):
        torch.testing.assert_close(a, b, atol=5e-5, rtol=1e-3)  # float32 summation order differs
