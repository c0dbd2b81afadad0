"""Tiny models and tokenizers built in-process, so tests run offline in seconds."""
from __future__ import annotations

from pathlib import Path

import torch

WORDS = (
    "the a cat dog sat on mat good bad very is was and it sun rain city park bike lane storm power "
    "home crew friday library open late news short long report council vote money tree river green "
    "blue red one two three four five six seven eight nine ten yes no maybe summary text source"
).split()
SPECIAL = ["[PAD]", "[UNK]", "[BOS]", "[EOS]", "[CLS]", "[SEP]"]


def make_tokenizer(words=WORDS):
    """A word-level fast tokenizer; pairs are encoded as [CLS] a [SEP] b [SEP]."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(SPECIAL + list(dict.fromkeys(words)))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="$A", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])]
    )
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", bos_token="[BOS]",
                                   eos_token="[EOS]", cls_token="[CLS]", sep_token="[SEP]", model_max_length=128)


def make_tiny_llama(path: Path, seed: int = 0, hidden: int = 32, layers: int = 2, tied: bool = False) -> Path:
    """A randomly initialised Llama-style causal LM with the tiny tokenizer, saved to `path`
    (`tied`: the head shares the embeddings' weights, as in SmolLM2 and Llama 3.2)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = make_tokenizer()
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=128, pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         tie_word_embeddings=tied, initializer_range=0.2)  # logits with some spread
    model = LlamaForCausalLM(config)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def make_tiny_gpt2(path: Path, seed: int = 0, dropout: float = 0.0) -> Path:
    """A randomly initialised GPT-2 with the tiny tokenizer: learned position embeddings (weights
    outside its blocks, embeddings and head) and Conv1D layers, unlike Llama."""
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer = make_tokenizer()
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=4, n_positions=128,
                        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                        eos_token_id=tokenizer.eos_token_id, initializer_range=0.2,
                        resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout)  # 0: runs compare exactly
    GPT2LMHeadModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def make_tiny_nli(path: Path, labels=("entailment", "neutral", "contradiction"), seed: int = 0) -> Path:
    """A tiny BERT sequence classifier with NLI label names in the given order, saved to `path`."""
    from transformers import BertConfig, BertForSequenceClassification

    tokenizer = make_tokenizer()
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                        num_attention_heads=2, max_position_embeddings=128, num_labels=len(labels),
                        id2label=dict(enumerate(labels)), label2id={l: i for i, l in enumerate(labels)},
                        pad_token_id=tokenizer.pad_token_id)
    model = BertForSequenceClassification(config)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def tiny_lora(path: str, r: int = 4):
    """(peft model with non-zero LoRA weights, left-padding tokenizer) over the tiny Llama at `path`."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from moalign.rl.policy import peft_wrapping

    tok = AutoTokenizer.from_pretrained(path)
    tok.padding_side = "left"
    with peft_wrapping():
        model = get_peft_model(AutoModelForCausalLM.from_pretrained(path),
                               LoraConfig(r=r, target_modules="all-linear", init_lora_weights=False))
    return model, tok
