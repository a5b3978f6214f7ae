"""The command line, run as a user runs it: subprocesses, and a real terminal for the chat REPL."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pexpect
import pytest

LLAMAPY = [sys.executable, "-m", "llamapy.cli"]


def run(*args: str, stdin: str | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*LLAMAPY, *args], input=stdin, capture_output=True, text=True,
                          env={**os.environ, **(env or {})})


def test_complete_streams_a_continuation(model_path):
    proc = run("complete", "The capital of France is", "-m", str(model_path), "-t", "0", "-n", "8", "--stats")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().startswith("Paris")
    assert "generation:" in proc.stderr and "t/s" in proc.stderr


def test_complete_uses_the_default_model_and_env(model_path):
    proc = run("complete", "The capital of France is", "-t", "0", "-n", "4")
    assert proc.returncode == 0 and "Paris" in proc.stdout, proc.stderr
    proc = run("complete", "The capital of France is", "-t", "0", "-n", "4", env={"LLAMAPY_MODEL": str(model_path)})
    assert proc.returncode == 0 and "Paris" in proc.stdout, proc.stderr


def test_complete_reads_stdin(model_path):
    proc = run("complete", "-", "-m", str(model_path), "-t", "0", "-n", "6", stdin="The capital of France is")
    assert proc.returncode == 0 and "Paris" in proc.stdout, proc.stderr


def test_complete_with_a_json_schema(model_path, tmp_path):
    schema = tmp_path / "s.json"
    schema.write_text(json.dumps({"type": "object", "properties": {"city": {"type": "string", "maxLength": 12}},
                                  "required": ["city"]}))
    proc = run("complete", "Answer in JSON: the capital of France.", "-m", str(model_path), "-t", "0", "-n", "40",
               "--json-schema", str(schema))
    assert proc.returncode == 0, proc.stderr
    assert isinstance(json.loads(proc.stdout)["city"], str)


@pytest.mark.parametrize("setup,message", [
    (lambda d: str(d / "missing.gguf"), "model file not found"),
    (lambda d: (d / "notes.txt").write_text("hello") and str(d / "notes.txt"), "is not a GGUF model file"),
    (lambda d: str(d), "expected a GGUF model file, got a directory"),
])
def test_user_mistakes_get_one_line_and_no_traceback(tmp_path, setup, message):
    proc = run("complete", "hi", "-m", setup(tmp_path))
    assert proc.returncode != 0
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_verbose_shows_the_traceback(tmp_path):
    proc = run("complete", "hi", "-m", str(tmp_path / "missing.gguf"), "-v")
    assert proc.returncode != 0 and "Traceback" in proc.stderr


def test_bad_option_values(model_path, tmp_path):
    proc = run("complete", "hi", "-m", str(model_path), "--json-schema", str(tmp_path / "none.json"))
    assert proc.returncode != 0 and "JSON schema file not found" in proc.stderr and "Traceback" not in proc.stderr
    bad = tmp_path / "bad.gbnf"
    bad.write_text('root ::= "unclosed')
    proc = run("complete", "hi", "-m", str(model_path), "--grammar", str(bad))
    assert proc.returncode != 0 and "invalid grammar" in proc.stderr and "Traceback" not in proc.stderr


def test_models_and_pull(model_path):
    proc = run("models", "--json")
    rows = json.loads(proc.stdout)
    assert rows[0]["name"] == "smollm2-135m-instruct" and rows[0]["cached"]
    proc = run("pull")
    assert proc.returncode == 0 and Path(proc.stdout.strip()) == model_path
    proc = run("pull", "no-such-model")
    assert proc.returncode != 0 and "unknown model 'no-such-model'" in proc.stderr


def test_chat_with_piped_stdin(model_path):
    from llamapy import LLM

    question = "What is the capital of France?"
    proc = run("chat", "-m", str(model_path), "-t", "0", "-n", "24", "--system", "You are terse.", stdin=question)
    assert proc.returncode == 0, proc.stderr
    with LLM(model_path, temperature=0, repeat_penalty=1.0, max_tokens=24) as llm:
        expected = llm.chat([{"role": "system", "content": "You are terse."}, {"role": "user", "content": question}])
    assert proc.stdout.strip() == expected.strip() and expected.strip()


def test_chat_repl_in_a_terminal(model_path, tmp_path):
    env = {**os.environ, "TERM": "dumb"}
    # timeout: a guard so that a broken REPL fails the test instead of hanging it (not a speed check)
    child = pexpect.spawn(LLAMAPY[0], [*LLAMAPY[1:], "chat", "-m", str(model_path), "-t", "0", "-n", "400"],
                          env=env, encoding="utf-8", timeout=600, dimensions=(40, 200))
    try:
        child.expect_exact("> ")
        child.sendline("Hello! Who are you?")
        child.expect(r"\w+")
        child.expect_exact("> ")
        child.sendline("Write a very long story about a dragon, with many chapters.")
        child.expect_exact("many chapters.")  # the terminal's echo of what was typed
        child.expect(r"\w+ \w+ \w+ \w+")  # the reply is streaming
        child.sendintr()  # Ctrl-C stops this reply, not the session
        child.expect_exact("[stopped]")
        child.expect_exact("> ")
        child.sendline("/stats")
        child.expect("generation: \\d+ tokens")
        child.sendline(f"/save {tmp_path / 'conv.json'}")
        child.expect_exact("(saved to")
        child.sendline("/reset")
        child.expect_exact("(conversation cleared)")
        child.sendline("/exit")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0
    saved = json.loads((tmp_path / "conv.json").read_text())
    assert [m["role"] for m in saved["messages"]] == ["user", "assistant", "user", "assistant"]
    assert saved["messages"][1]["content"].strip() and saved["messages"][3]["content"].strip()
