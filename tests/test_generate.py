"""The generation layer: LLM, streaming, stop sequences, prefix reuse, overflow, structured output."""
from __future__ import annotations

import json

import jsonschema
import pytest

from llamapy import (
    LLM,
    GenerationConfig,
    GrammarError,
    PromptTooLongError,
    SchemaError,
    chat,
    complete,
    schema_to_gbnf,
)
from llamapy.generation.llm import _StopScanner
from tests.test_oracle import greedy_pieces
from tests.test_vocab import _invalid_utf8

PROMPT = "The capital of France is"


@pytest.fixture(scope="module")
def llm(model_path):
    with LLM(model_path, temperature=0, repeat_penalty=1.0, max_tokens=48, n_ctx=2048, n_threads=2) as m:
        yield m


def test_greedy_equals_the_core_layer(llm, model_path):
    ids, pieces = greedy_pieces(llm.model, PROMPT, 48)
    expected = pieces.decode()
    assert llm(PROMPT) == expected
    assert "".join(llm(PROMPT, stream=True)) == expected
    text, stats = llm.generate_with_stats(PROMPT)
    assert text == expected and stats.completion_tokens == len(ids)
    assert stats.tokens_per_second > 0 and stats.time_to_first_token > 0 and stats.finish_reason in ("stop", "length")


def test_module_functions(model_path):
    assert complete(PROMPT, model_path=model_path, temperature=0, max_tokens=8).strip().startswith("Paris")
    reply = chat([{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Say hello."}],
                 model_path=model_path, temperature=0, max_tokens=16)
    assert isinstance(reply, str) and reply.strip()


def forced(llm: LLM, text: str, **kw):
    """Generate exactly ``text`` (a grammar forces it), streaming; returns the chunks."""
    grammar = 'root ::= "' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return list(llm.stream("Write:", grammar=grammar, max_tokens=64, **kw))


def test_stream_never_splits_a_character(llm):
    text = "🦙 llamas say 你好 and 👍🏽 loudly"
    chunks = forced(llm, text)
    assert "".join(chunks) == text
    assert all("\ufffd" not in c for c in chunks)
    pieces = [llm.vocab.token_to_bytes(t) for t in llm.last_stats.tokens]
    assert any(_invalid_utf8(p) for p in pieces), "the text should contain tokens holding part of a character"


@pytest.mark.parametrize("stop,expected", [
    (["beta STOP"], "alpha "),
    (["STOP"], "alpha beta "),
    (["gamma", "a b"], "alph"),
    (["not there"], "alpha beta STOP gamma"),
])
def test_stop_sequences_spanning_tokens_are_never_emitted(llm, stop, expected):
    chunks = forced(llm, "alpha beta STOP gamma", stop_sequences=stop)
    assert "".join(chunks) == expected
    assert llm.last_stats.finish_reason == "stop"


def test_stop_scanner_holds_back_partial_matches():
    s = _StopScanner(["</end>"])
    assert s.push("hello <") == ("hello ", False)
    assert s.push("/en") == ("", False)
    assert s.push("x") == ("</enx", False)
    assert s.push("ok </end> tail") == ("ok ", True)


def test_on_token_and_eog_end_generation(llm):
    seen: list[str] = []
    reply = llm.chat([{"role": "user", "content": "Reply with just the word yes."}],
                     on_token=seen.append, max_tokens=64)
    assert llm.last_stats.finish_reason == "stop" and seen
    assert "".join(seen) == reply == llm.vocab.detokenize(llm.last_stats.tokens)
    streamed: list[str] = []
    assert llm("The capital of France is", max_tokens=8, on_token=streamed.append) == "".join(streamed)


def test_breaking_out_of_a_stream_keeps_the_cache_consistent(llm, model_path):
    stream = llm.stream("Once upon a time", max_tokens=40)
    for i, _ in enumerate(stream):
        if i == 3:
            break
    stream.close()
    again = llm("Once upon a time there was", max_tokens=16)
    with LLM(model_path, temperature=0, repeat_penalty=1.0, n_ctx=2048, n_threads=2) as fresh:
        assert again == fresh("Once upon a time there was", max_tokens=16)


def test_chat_turns_decode_only_new_tokens(llm):
    messages = [{"role": "system", "content": "You are a helpful assistant."}]
    previous_prompt = 0
    for turn, question in enumerate(["Hi!", "What is 2+2?", "And 3+3?", "Name a colour.", "Thanks, bye."]):
        messages.append({"role": "user", "content": question})
        reply, stats = llm.chat_with_stats(messages, max_tokens=24)
        messages.append({"role": "assistant", "content": reply})
        new_tokens = len(llm.vocab.tokenize(question, add_special=False))
        if turn == 0:
            assert stats.prompt_tokens_decoded == stats.prompt_tokens
        else:
            # the question plus the chat markup around it (end of the previous reply, role header)
            assert stats.prompt_tokens_decoded <= new_tokens + 12, (turn, stats)
            assert stats.prompt_tokens > previous_prompt
        previous_prompt = stats.prompt_tokens


def test_prompt_too_long_fails_before_decoding(model_path):
    with LLM(model_path, temperature=0, repeat_penalty=1.0, n_ctx=256, n_threads=2) as small:
        small("Hello", max_tokens=2)
        cached = list(small._cached)
        with pytest.raises(PromptTooLongError, match="the prompt has .* tokens but the context holds 256"):
            small("word " * 400)
        assert small._cached == cached


def test_reaching_the_context_end(model_path):
    with LLM(model_path, temperature=0, repeat_penalty=1.0, n_ctx=256, n_threads=2) as small:
        text, stats = small.generate_with_stats("List of numbers: 1, 2, 3,", max_tokens=1000)
        # the context holds 256 tokens; the last one generated is emitted without being stored
        assert stats.finish_reason == "length" and stats.prompt_tokens + stats.completion_tokens == 257
        text, stats = small.generate_with_stats("List of numbers: 1, 2, 3,", max_tokens=400, context_shift=True)
        assert stats.completion_tokens == 400


def test_logprobs(llm):
    _, stats = llm.generate_with_stats(PROMPT, max_tokens=4, logprobs=3)
    assert len(stats.logprobs) == 4
    for lp in stats.logprobs:
        assert lp.logprob <= 0 and len(lp.top) == 3
        assert lp.top[0][2] >= lp.top[1][2] >= lp.top[2][2]
        assert lp.token == lp.top[0][0]  # greedy takes the most likely token


def test_continuation_logprob_is_the_generated_tokens_logprob(llm):
    """Scoring a greedy completion gives the sum of the log-probabilities its tokens were generated with."""
    text, stats = llm.generate_with_stats(PROMPT, max_tokens=8, logprobs=0)
    assert llm.vocab.tokenize(text, add_special=False) == stats.tokens  # the same tokens are scored
    expected = sum(lp.logprob for lp in stats.logprobs)
    assert llm.continuation_logprob(PROMPT, text) == pytest.approx(expected, abs=0.05)
    assert llm.continuation_logprob(PROMPT, " zebra zebra zebra") < expected - 5
    with pytest.raises(ValueError, match="non-empty"):
        llm.continuation_logprob(PROMPT, "")


def test_settings_are_checked(llm):
    with pytest.raises(TypeError, match="unknown generation setting"):
        llm(PROMPT, temprature=0.5)
    with pytest.raises(ValueError, match="either grammar or json_schema"):
        llm(PROMPT, grammar='root ::= "a"', json_schema={"type": "string"})
    assert GenerationConfig().replace(stop_sequences="x").stop_sequences == ("x",)


def test_invalid_grammar_is_reported_before_decoding(llm):
    with pytest.raises(GrammarError, match="invalid grammar"):
        llm(PROMPT, grammar='root ::= "open')


SCHEMAS = [
    {"type": "object", "properties": {"name": {"type": "string", "maxLength": 20},
                                      "age": {"type": "integer", "minimum": 0}}, "required": ["name", "age"]},
    {"type": "object", "properties": {"city": {"type": "string", "maxLength": 15},
                                      "population": {"type": "integer", "minimum": 1},
                                      "capital": {"type": "boolean"}}, "required": ["city"]},
    {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 9}, "minItems": 2, "maxItems": 4},
    {"type": "object", "properties": {"colour": {"enum": ["red", "green", "blue"]}, "shade": {"const": "dark"}},
     "required": ["colour", "shade"]},
    {"type": "object", "properties": {"when": {"type": "string", "format": "date"},
                                      "id": {"type": "string", "format": "uuid"}}, "required": ["when", "id"]},
    {"anyOf": [{"type": "integer", "minimum": 0}, {"type": "string", "maxLength": 8}, {"type": "null"}]},
    {"$defs": {"point": {"type": "object", "properties": {"x": {"type": "integer", "minimum": 0, "maximum": 99},
                                                          "y": {"type": "integer", "minimum": 0, "maximum": 99}},
                         "required": ["x", "y"]}},
     "type": "object", "properties": {"a": {"$ref": "#/$defs/point"}, "b": {"$ref": "#/$defs/point"}},
     "required": ["a", "b"]},
    {"type": "object", "properties": {"tags": {"type": "array", "items": {"type": "string", "maxLength": 6},
                                               "maxItems": 3},
                                      "score": {"type": "number"}, "note": {"type": ["string", "null"],
                                                                            "maxLength": 10}},
     "required": ["tags", "score", "note"]},
]


@pytest.mark.parametrize("schema", SCHEMAS, ids=[f"schema{i}" for i in range(len(SCHEMAS))])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_schema_output_always_validates(llm, schema, seed):
    text = llm("Produce JSON data:", json_schema=schema, temperature=1.0, seed=seed, max_tokens=200)
    assert llm.last_stats.finish_reason == "stop", f"output did not finish: {text!r}"
    value = json.loads(text)
    jsonschema.validate(value, schema, format_checker=jsonschema.FormatChecker())


@pytest.mark.parametrize("schema,part", [
    ({"type": "string", "pattern": "^a+$"}, "#: 'pattern'"),
    ({"type": "object", "properties": {"n": {"type": "number", "minimum": 0.5}}}, "#/properties/n"),
    ({"type": "integer", "minimum": 5, "maximum": 10**9}, "integer bounds"),
    ({"$ref": "https://example.com/schema"}, "only local references"),
    ({"type": "string", "format": "hostname"}, "format 'hostname'"),
    ({"type": "object", "properties": {}, "required": ["ghost"]}, "ghost"),
])
def test_unsupported_schema_parts_are_named(schema, part):
    with pytest.raises(SchemaError, match=part.replace("$", r"\$").replace("'", "'")):
        schema_to_gbnf(schema)
