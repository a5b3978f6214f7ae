"""Grammar backends: llama.cpp's grammar sampler and llguidance behind one interface.

Schema outputs validate under both, greedy output matches llama.cpp's own grammar sampler
in a C chain (the oracle), lazy grammars trigger the same way, a completed grammar is not
consulted again, and refusals name what is unsupported.
"""
from __future__ import annotations

import json

import jsonschema
import pytest

from llamapy import LLM, BatchGenerator, BatchRequest, GenerationConfig, GrammarError, SamplerChain, SchemaError
from llamapy.batch import Batch
from llamapy.context import Context
from llamapy.generation.grammar import (
    ConstrainedSampler,
    Constraint,
    Grammar,
    LlamaConstraint,
    available_backends,
    constrain,
    default_backend,
    llguidance_tokenizer,
    make_constraint,
)
from tests.conftest import run_python
from tests.test_generate import SCHEMAS

BACKENDS = ["llama", "llguidance"]
PROMPT = "The capital of France is"
# Nested, with arrays, enums, numbers and optional keys: what an application would ask for.
ORDER = {
    "type": "object",
    "properties": {
        "customer": {"type": "object", "properties": {"name": {"type": "string", "maxLength": 20},
                                                      "vip": {"type": "boolean"}}, "required": ["name", "vip"]},
        "items": {"type": "array", "items": {"type": "object", "properties": {
            "sku": {"type": "string", "maxLength": 8}, "qty": {"type": "integer", "minimum": 1, "maximum": 9}},
            "required": ["sku", "qty"]}, "minItems": 1, "maxItems": 3},
        "status": {"enum": ["new", "paid", "shipped"]},
        "note": {"type": ["string", "null"], "maxLength": 12},
    },
    "required": ["customer", "items", "status", "note"],
}


@pytest.fixture(scope="module")
def llm(model_path):
    with LLM(model_path, temperature=0, max_tokens=48, n_ctx=2048, n_threads=2) as m:
        yield m


def test_both_backends_are_installed_and_llguidance_is_the_default():
    assert available_backends() == ["llguidance", "llama"]
    assert default_backend() == "llguidance"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("schema", SCHEMAS + [ORDER], ids=[f"schema{i}" for i in range(len(SCHEMAS))] + ["order"])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_schema_output_validates_at_temperature_one(llm, backend, schema, seed):
    text = llm("Produce JSON data:", json_schema=schema, grammar_backend=backend, temperature=1.0, seed=seed,
               max_tokens=200)
    assert llm.last_stats.finish_reason == "stop", f"output did not finish: {text!r}"
    jsonschema.validate(json.loads(text), schema, format_checker=jsonschema.FormatChecker())


def _oracle_greedy(model, prompt: str, gbnf: str, n: int, repeat_penalty: float) -> list[int]:
    """Greedy tokens from llama.cpp's grammar sampler at the head of a C sampler chain."""
    with Context(model, n_ctx=512, n_batch=64, n_threads=2) as ctx:
        chain = SamplerChain().add_grammar(model.vocab, gbnf)
        if repeat_penalty != 1.0:
            chain.add_penalties(64, repeat_penalty)
        chain.add_greedy()
        tokens = model.vocab.tokenize_prompt(prompt)
        batch = Batch(64)
        batch.add_sequence(tokens, 0, 0, "last")
        ctx.decode(batch)
        out: list[int] = []
        for pos in range(len(tokens), len(tokens) + n):
            tok = chain.sample(ctx, -1)
            if model.vocab.is_eog(tok):
                break
            out.append(tok)
            batch.clear()
            batch.add(tok, pos, 0, True)
            ctx.decode(batch)
        return out


GBNF_ANSWER = r'''root ::= " " city ", " "population " digits " (" country ")"
city ::= [A-Z] [a-z]+
digits ::= [1-9] [0-9]{0,7}
country ::= "France" | "Italy" | "Spain"'''


@pytest.mark.parametrize("repeat_penalty", [1.0, 1.1])  # a bare greedy chain, and one with penalties
def test_greedy_gbnf_matches_llama_cpp_grammar_sampler(llm, model, repeat_penalty):
    expected = model.vocab.detokenize(_oracle_greedy(model, PROMPT, GBNF_ANSWER, 40, repeat_penalty))
    assert expected.startswith(" Paris, population ")
    text = llm(PROMPT, grammar=GBNF_ANSWER, grammar_backend="llama", max_tokens=40, repeat_penalty=repeat_penalty)
    assert text == expected


@pytest.mark.parametrize("repeat_penalty", [1.0, 1.1])
def test_llguidance_output_is_accepted_by_llama_cpp_grammar(llm, model, repeat_penalty):
    """llguidance keeps forced text to its usual tokens (llama.cpp lets " " + "population" stand
    for " population"), so the token paths differ; llama.cpp's grammar must accept its output."""
    text, stats = llm.generate_with_stats(PROMPT, grammar=GBNF_ANSWER, grammar_backend="llguidance", max_tokens=40,
                                          repeat_penalty=repeat_penalty)
    assert stats.finish_reason == "stop" and text.startswith(" Paris, population ")
    oracle = make_constraint(model, Grammar.gbnf(GBNF_ANSWER), "llama")
    for tok in stats.tokens:
        assert oracle.allows(tok), (model.vocab.token_to_piece(tok), text)
        oracle.accept(tok)
    assert oracle.allows(model.vocab.eos)
    assert not oracle.allows(model.vocab.tokenize("1", add_special=False)[0])  # the grammar is at its end


@pytest.mark.parametrize("backend", BACKENDS)
def test_lark_and_regex_need_llguidance(llm, backend):
    grammar = Grammar.regex(r" [0-9]{3}-[0-9]{4}")
    if backend == "llama":
        with pytest.raises(GrammarError, match="does not read regex"):
            llm("Call me at", grammar=grammar, grammar_backend=backend)
        return
    text = llm("Call me at", grammar=grammar, grammar_backend=backend, temperature=1.0, seed=4)
    assert len(text) == 9 and text[4] == "-" and text.replace("-", "").strip().isdigit()
    lark = Grammar.lark('start: " " ("yes" | "no") "."')
    assert llm("Is the sky blue? Answer:", grammar=lark, grammar_backend=backend) in (" yes.", " no.")


@pytest.mark.parametrize("backend", BACKENDS)
def test_lazy_grammar_starts_at_its_trigger(llm, model, backend):
    free = llm(PROMPT, max_tokens=12)
    assert " Paris" in free
    before = free[: free.index("Paris")]
    forced = 'root ::= "Paris, the city of lights."'
    by_pattern = Grammar.gbnf(forced).lazy(patterns=["Paris"])
    assert llm(PROMPT, grammar=by_pattern, grammar_backend=backend, max_tokens=40) == before + "Paris, the city of lights."
    # with a group, the grammar reads from the group on; ^...$ must match all the text so far
    grouped = Grammar.gbnf('root ::= "Paris!"').lazy(patterns=[r"^[\s\S]*?(Paris)$"])
    assert llm(PROMPT, grammar=grouped, grammar_backend=backend, max_tokens=40) == before + "Paris!"
    paris = model.vocab.tokenize(" Paris", add_special=False)
    assert len(paris) == 1
    by_token = Grammar.gbnf('root ::= " Paris" " (France)"').lazy(tokens=paris)
    assert llm(PROMPT, grammar=by_token, grammar_backend=backend, max_tokens=40) == before.rstrip() + " Paris (France)"


class _Counting(Constraint):
    """Counts how often the grammar is asked (instrumentation around a real constraint)."""

    def __init__(self, inner: Constraint):
        self.inner = inner
        self.calls = 0

    def allows(self, token):
        self.calls += 1
        return self.inner.allows(token)

    def allowed(self):
        self.calls += 1
        return self.inner.allowed()

    def accept(self, token):
        self.calls += 1
        self.inner.accept(token)

    def reset(self):
        self.inner.reset()

    @property
    def complete(self):
        return self.inner.complete


@pytest.mark.parametrize("temperature", [0.0, 0.9])
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_complete_grammar_is_not_asked_again(llm, model, backend, temperature):
    cfg = llm.config.replace(temperature=temperature, seed=7)
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
    sampler = constrain(model, Grammar.json_schema(schema), cfg.sampler(model), backend)
    sampler.constraint = counting = _Counting(sampler.constraint)
    with Context(model, n_ctx=512, n_batch=64, n_threads=2) as ctx:
        batch = Batch(64)
        tokens = model.vocab.tokenize_prompt("JSON:")
        batch.add_sequence(tokens, 0, 0, "last")
        ctx.decode(batch)
        out, calls_when_complete = [], None
        for pos in range(len(tokens), len(tokens) + 30):  # far past the end of the object
            tok = sampler.sample(ctx, -1)
            out.append(tok)
            if sampler.complete and calls_when_complete is None:
                calls_when_complete = counting.calls
            batch.clear()
            batch.add(tok, pos, 0, True)
            ctx.decode(batch)
    eog = [t for t in out if model.vocab.is_eog(t)]
    text = model.vocab.detokenize([t for t in out if not model.vocab.is_eog(t)])
    assert json.loads(text) in ({"ok": True}, {"ok": False})
    assert out[len(out) - len(eog):] == eog and len(eog) > 20  # only end of generation once complete
    assert calls_when_complete is not None and counting.calls == calls_when_complete


def test_bit_mask_candidates_are_the_allowed_tokens_with_their_logits(llm, model):
    """The C pass over llguidance's mask gives the same tokens as unpacking it, with the context's logits."""
    sampler = constrain(model, Grammar.json_schema(ORDER), llm.config.replace(temperature=0.8, seed=3).sampler(model),
                        "llguidance")
    c = sampler.constraint
    assert c.bit_mask
    with Context(model, n_ctx=512, n_batch=64, n_threads=2) as ctx:
        batch = Batch(64)
        tokens = model.vocab.tokenize_prompt("JSON:")
        batch.add_sequence(tokens, 0, 0, "last")
        ctx.decode(batch)
        sizes = set()
        for pos in range(len(tokens), len(tokens) + 12):
            cand = sampler._masked(ctx, -1, c.mask())
            ids = c.allowed()
            assert cand["id"].tolist() == ids.tolist()
            assert (cand["logit"] == ctx.logits(-1)[ids]).all()
            sizes.add(ids.size)
            tok = sampler.sample(ctx, -1)
            assert tok in set(ids.tolist())
            batch.clear()
            batch.add(tok, pos, 0, True)
            ctx.decode(batch)
    assert len(sizes) > 2 and max(sizes) > 1000  # from a few forced tokens to most of the vocabulary
    with pytest.raises(NotImplementedError):
        make_constraint(model, Grammar.json_schema(ORDER), "llama").mask()


def test_prefetched_masks_give_the_same_tokens(model):
    """A mask computed in the background while the model decodes is the mask of the right position:
    the same seed gives the same tokens with and without prefetching."""
    def run(prefetch: bool) -> list[int]:
        cfg = GenerationConfig(temperature=1.0, seed=11)
        sampler = constrain(model, Grammar.json_schema(ORDER), cfg.sampler(model), "llguidance")
        c = sampler.constraint
        with Context(model, n_ctx=512, n_batch=64, n_threads=2) as ctx:
            batch = Batch(64)
            tokens = model.vocab.tokenize_prompt("JSON:")
            batch.add_sequence(tokens, 0, 0, "last")
            ctx.decode(batch)
            out = []
            for pos in range(len(tokens), len(tokens) + 40):
                tok = sampler.sample(ctx, -1)
                out.append(tok)
                if prefetch:
                    c.prefetch()
                    assert c._pending is not None or c._waiting or c._fresh
                batch.clear()
                batch.add(tok, pos, 0, True)
                ctx.decode(batch)
                if sampler.complete:
                    break
        return out

    assert run(True) == run(False)


@pytest.mark.parametrize("backend", BACKENDS)
def test_ignore_eos_past_the_end_of_the_object(llm, backend):
    schema = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 0, "maximum": 9}},
              "required": ["n"]}
    text, stats = llm.generate_with_stats("JSON:", json_schema=schema, grammar_backend=backend, ignore_eos=True,
                                          max_tokens=40)
    assert stats.completion_tokens == 40 and stats.finish_reason == "length"
    assert 0 <= json.loads(text)["n"] <= 9


def test_llguidance_tokenizer_is_the_models_vocabulary(model):
    tok = llguidance_tokenizer(model)
    assert tok is llguidance_tokenizer(model)  # built once per model
    assert tok.vocab_size == model.vocab.n_tokens
    assert model.vocab.eos in tok.eos_tokens
    text = "Structured output: {\"a\": [1, 2]} 🦙 done."
    ids = model.vocab.tokenize(text, add_special=False)
    assert tok.decode_bytes(ids) == text.encode()
    assert tok.is_special_token(model.vocab.eos) and not tok.is_special_token(ids[0])


def test_refusals_name_what_is_unsupported(llm, model):
    with pytest.raises(ValueError, match="unknown grammar_backend 'fast'"):
        llm(PROMPT, grammar='root ::= "a"', grammar_backend="fast")
    with pytest.raises(GrammarError, match="does not read lark"):
        make_constraint(model, Grammar.lark('start: "a"'), "llama")
    with pytest.raises(GrammarError, match="llguidance cannot use this GBNF grammar"):
        make_constraint(model, Grammar.gbnf('root ::= "open'), "llguidance")
    with pytest.raises(GrammarError, match="invalid grammar"):
        make_constraint(model, Grammar.gbnf('root ::= "open'), "llama")
    # a keyword llguidance does not implement is named, and the schema is not handed on to be weakened
    odd = {"type": "object", "properties": {"a": {"type": "string"}}, "dependentSchemas": {"a": {"required": ["b"]}}}
    with pytest.raises(SchemaError, match="dependentSchemas"):
        make_constraint(model, Grammar.json_schema(odd), "llguidance")
    with pytest.raises(SchemaError, match="dependentSchemas"):
        llm(PROMPT, json_schema=odd)
    # a GBNF grammar llguidance refuses goes to llama.cpp's engine when none is named
    gbnf = 'root ::= "caf\\u00e9"'  # llguidance's GBNF reader mistranslates this escape
    with pytest.raises(GrammarError):
        make_constraint(model, Grammar.gbnf(gbnf), "llguidance")
    assert isinstance(make_constraint(model, Grammar.gbnf(gbnf)), LlamaConstraint)
    assert llm("Drink:", grammar=gbnf) == "café"
    # a pattern only llguidance implements: the default backend takes it, llama.cpp's names it
    pattern = {"type": "string", "pattern": "^[a-z]{3}[0-9]$"}
    with pytest.raises(SchemaError, match="pattern"):
        llm(PROMPT, json_schema=pattern, grammar_backend="llama")
    assert json.loads(llm("Code:", json_schema=pattern, temperature=1.0, seed=2))[3].isdigit()


def test_asking_for_llguidance_without_it_gives_the_install_line(model_path):
    code = f"""
import sys
sys.modules["llguidance"] = None  # as if it were not installed
from llamapy import LLM, GrammarError
from llamapy.generation.grammar import default_backend
assert default_backend() == "llama"
with LLM({str(model_path)!r}, temperature=0, max_tokens=4, n_ctx=256) as llm:
    assert llm("Hi", grammar='root ::= " yes"') == " yes"
    try:
        llm("Hi", grammar='root ::= " yes"', grammar_backend="llguidance")
    except GrammarError as e:
        print(e)
"""
    r = run_python(code)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "grammar_backend='llguidance' needs the llguidance package: pip install 'llamapy[grammar]'"


@pytest.mark.parametrize("backend", BACKENDS)
def test_batched_sequences_each_follow_their_grammar(model_path, backend):
    with BatchGenerator(model_path, n_seq_max=4, n_ctx=2048, n_batch=128, temperature=1.0, max_tokens=200,
                        n_threads=2, grammar_backend=backend) as gen:
        requests = [BatchRequest(i, "Produce JSON data:", seed=i, json_schema=schema)
                    for i, schema in enumerate([ORDER, SCHEMAS[0], SCHEMAS[6], ORDER, SCHEMAS[7]])]
        requests.append(BatchRequest("free", PROMPT, temperature=0.0, max_tokens=8))
        responses = {r.id: r for r in gen.generate_responses(requests)}
    for req in requests[:-1]:
        r = responses[req.id]
        assert r.finish_reason == "stop", r.response
        jsonschema.validate(json.loads(r.response), req.json_schema)
    assert responses["free"].response.strip().startswith("Paris")


def test_constrained_sampler_needs_a_choosing_chain(model):
    constraint = make_constraint(model, Grammar.gbnf('root ::= "a"'), "llama")
    with pytest.raises(GrammarError, match="must end with one that picks"):
        ConstrainedSampler(constraint, SamplerChain().add_top_k(5), model)
