"""Chat templates: the model's template, llama.cpp's built-ins, and the sandbox."""
from __future__ import annotations

from pathlib import Path

import pytest

from llamapy import LLM, ChatTemplate, ChatTemplateError, Model, TemplateSecurityError
from llamapy.generation.chat_template import builtin_templates
from tests.conftest import copy_gguf_with_strings

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"}]

# The payload class of CVE-2024-34359: a GGUF chat template reaching Python's os module.
PAYLOADS = [
    "{{ self.__init__.__globals__.__builtins__.__import__('os').system('touch {marker}') }}",
    "{% for x in ().__class__.__base__.__subclasses__() %}{% if 'warning' in x.__name__ %}"
    "{{ x()._module.__builtins__['__import__']('os').system('touch {marker}') }}{% endif %}{% endfor %}",
    "{{ cycler.__init__.__globals__.os.system('touch {marker}') }}",
    "{{ messages.append({'role': 'x'}) }}"
    "{{ ''.__class__.__mro__[1].__subclasses__()[0].__init__.__globals__['sys'].modules['os'].system('touch {marker}') }}",
]


@pytest.fixture(scope="module")
def model(model_path):
    with Model.from_file(model_path, vocab_only=True) as m:
        yield m


def test_model_template_renders_chatml(model):
    t = ChatTemplate.for_model(model)
    text = t.render(MESSAGES)
    assert text == ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi there<|im_end|>\n"
                    "<|im_start|>assistant\n")
    assert not t.render(MESSAGES, add_generation_prompt=False).endswith("assistant\n")


def test_builtin_formats_via_llama_cpp(model):
    assert {"chatml", "llama3", "mistral-v7"} <= set(builtin_templates())
    text = ChatTemplate.for_model(model, "llama3").render(MESSAGES)
    assert "<|start_header_id|>user<|end_header_id|>" in text and "Hi there" in text


def test_template_globals(model):
    t = ChatTemplate("{{ bos_token }}{% for m in messages %}{{ m.content | tojson }}{% endfor %}"
                     "{{ strftime_now('%Y') | length }}{% if tools %}{{ tools[0].name }}{% endif %}",
                     bos_token="<s>")
    assert t.render([{"role": "user", "content": "é\"x"}], tools=[{"name": "calc"}]) == '<s>"é\\"x"4calc'
    refuse = ChatTemplate("{{ raise_exception('only user/assistant roles') }}")
    with pytest.raises(ChatTemplateError, match="only user/assistant roles"):
        refuse.render(MESSAGES)
    with pytest.raises(ChatTemplateError, match="does not parse"):
        ChatTemplate("{% for %}")
    with pytest.raises(ChatTemplateError, match="role"):
        ChatTemplate.for_model(model).render([{"content": "no role"}])


@pytest.mark.parametrize("payload", PAYLOADS)
def test_template_escape_from_a_gguf_is_stopped(model_path, tmp_path, payload):
    marker = tmp_path / "pwned"
    evil = copy_gguf_with_strings(model_path, tmp_path / "evil.gguf",
                                  {"tokenizer.chat_template": payload.replace("{marker}", str(marker))})
    with LLM(evil, temperature=0, max_tokens=4, n_ctx=256, n_threads=2) as llm:
        assert llm.model.chat_template() == payload.replace("{marker}", str(marker))
        with pytest.raises(TemplateSecurityError, match="escape its sandbox"):
            llm.chat(MESSAGES)
    assert not Path(marker).exists(), "the template executed code"


def test_generation_tag_renders_its_body():
    """transformers' {% generation %} (a training-mask marker in some templates) keeps its body."""
    t = ChatTemplate("{% for m in messages %}{% if m.role == 'assistant' %}{% generation %}<{{ m.content }}>"
                     "{% endgeneration %}{% else %}[{{ m.content }}]{% endif %}{% endfor %}")
    assert t.render([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]) == "[a]<b>"
