"""llama.cpp's own C++ programs are the judge: generation and tokenization must match them."""
from __future__ import annotations

import ast
import subprocess

import pytest

from llamapy import Batch, Context, Model, SamplerChain

PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):",
    "Once upon a time, in a land far away,",
    "<|im_start|>user\nName three colours.<|im_end|>\n<|im_start|>assistant\n",
]
N_PREDICT = 64

MIXED_TEXT = ("Hello world! Ça va? Größe, naïve café. 日本語のテキスト 中文 한국어 "
              "emoji 🦙🚀👍🏽 math ∑∫ tabs\tand\nnewlines <|im_start|>user hi<|im_end|> 1234567")


def greedy_pieces(model: Model, prompt: str, n_predict: int) -> tuple[list[int], bytes]:
    """Greedy generation the way llama-simple does it, returning token ids and their pieces."""
    vocab = model.vocab
    toks = vocab.tokenize(prompt, add_special=True, parse_special=True)
    ctx = Context(model, n_ctx=len(toks) + n_predict, n_batch=len(toks), n_threads=2)
    sampler = SamplerChain.greedy()
    ctx.decode(Batch.from_tokens(toks, pos0=0))
    out: list[int] = []
    one = Batch(1)
    for i in range(n_predict):
        tok = sampler.sample(ctx, -1)
        if vocab.is_eog(tok):
            break
        out.append(tok)
        one.clear()
        one.add(tok, len(toks) + i, 0, logits=True)
        ctx.decode(one)
    ctx.close()
    return out, b"".join(vocab.token_to_bytes(t, special=True) for t in out)


@pytest.mark.parametrize("prompt", PROMPTS)
def test_greedy_generation_equals_llama_simple(model, model_path, llama_tools, prompt):
    proc = subprocess.run([str(llama_tools / "llama-simple"), "-m", str(model_path), "-n", str(N_PREDICT), prompt],
                          capture_output=True, check=True)
    prompt_text = b"".join(model.vocab.token_to_bytes(t, special=True)
                           for t in model.vocab.tokenize(prompt, add_special=True, parse_special=True))
    assert proc.stdout.startswith(prompt_text)
    theirs = proc.stdout[len(prompt_text):].removesuffix(b"\n")
    ids, ours = greedy_pieces(model, prompt, N_PREDICT)
    assert ids, "nothing generated"
    assert ours == theirs, f"\nllama-simple: {theirs!r}\nllamapy:      {ours!r}"


def llama_tokenize(tools, model_path, text: str, tmp_path, parse_special: bool) -> list[int]:
    f = tmp_path / "prompt.txt"
    f.write_bytes(text.encode())
    cmd = [str(tools / "llama-tokenize"), "-m", str(model_path), "-f", str(f), "--ids", "--no-escape",
           "--log-disable"] + ([] if parse_special else ["--no-parse-special"])
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return ast.literal_eval(out.strip().splitlines()[-1])


@pytest.mark.parametrize("parse_special", [False, True])
@pytest.mark.parametrize("text", [MIXED_TEXT, " leading space", "", "a" * 300, "🦙" * 7])
def test_tokenize_equals_llama_tokenize(model, model_path, llama_tools, tmp_path, text, parse_special):
    theirs = llama_tokenize(llama_tools, model_path, text, tmp_path, parse_special)
    ours = model.vocab.tokenize(text, add_special=True, parse_special=parse_special)
    assert ours == theirs
