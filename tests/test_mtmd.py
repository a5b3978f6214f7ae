"""Images in prompts through libmtmd, on the real test model with a tiny random projector.

The projector (a LLaVA-style MLP over a small ViT, written by tests/tiny_projector.py) has
random weights: it proves the pipeline end to end, and llama.cpp's own ``llama-mtmd-cli``
is the oracle for what the pipeline must produce.
"""
from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO, run_python
from tests.tiny_projector import write_test_image, write_tiny_projector

N_IMAGE_TOKENS = 16  # (image_size 32 / patch_size 8) ** 2
SETTINGS = dict(n_ctx=1024, n_threads=2, temperature=0.0, repeat_penalty=1.0, max_tokens=10)


@pytest.fixture(scope="module")
def assets(tmp_path_factory, model) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("mtmd")
    return {
        "proj": write_tiny_projector(d / "mmproj.gguf", model.n_embd_inp),
        "narrow": write_tiny_projector(d / "mmproj-narrow.gguf", 64),
        "img1": write_test_image(d / "one.png", 40, 30, seed=1),
        "img2": write_test_image(d / "two.png", 24, 48, seed=2),
    }


@pytest.fixture(scope="module")
def llm(model_path, assets):
    from llamapy import LLM

    with LLM(model_path, mmproj=assets["proj"], **SETTINGS) as llm:
        yield llm


@pytest.fixture(scope="module")
def mtmd_cli(info) -> Path:
    sys.path.insert(0, str(REPO))
    from tools.cmake_build import build_tools

    return build_tools(Path(info["llama_cpp"]["build_dir"]), ["llama-mtmd-cli"]) / "llama-mtmd-cli"


def oracle(cli: Path, model_path: Path, proj: Path, images: list[Path], prompt: str, n: int) -> tuple[str, int, int]:
    """llama-mtmd-cli's greedy reply, its image token count and its prompt token count."""
    args = [str(cli), "-m", str(model_path), "--mmproj", str(proj), "-p", prompt, "-n", str(n), "--temp", "0",
            "--repeat-penalty", "1.0", "-t", "2", "-c", "1024", "-fit", "off", "--jinja", "--no-warmup", "-lv", "4"]
    for image in images:
        args += ["--image", str(image)]
    proc = subprocess.run(args, capture_output=True, text=True, env={**os.environ, "MTMD_TEST_RESPONSE_MARKER": "@@"},
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    reply = proc.stdout.split("@@", 1)[1].strip()
    image_tokens = sum(int(n) for n in re.findall(r"n_tokens_batch = (\d+)", proc.stderr))
    prompt_tokens = int(re.search(r"prompt eval time = .*?/\s*(\d+) tokens", proc.stderr).group(1))
    return reply, image_tokens, prompt_tokens


def image_part(path: Path) -> dict:
    return {"type": "image_url", "image_url": {"url": path.as_uri()}}


# -- the oracle ------------------------------------------------------------------------------
def test_greedy_reply_equals_llama_mtmd_cli(llm, mtmd_cli, model_path, assets):
    prompt = "Describe the image."
    expected, cli_image_tokens, cli_prompt_tokens = oracle(mtmd_cli, model_path, assets["proj"], [assets["img1"]],
                                                           prompt, SETTINGS["max_tokens"])
    messages = [{"role": "user", "content": [image_part(assets["img1"]), {"type": "text", "text": prompt}]}]
    text, stats = llm.chat_with_stats(messages)
    assert text.strip() == expected
    assert stats.completion_tokens == SETTINGS["max_tokens"]
    assert cli_image_tokens == N_IMAGE_TOKENS
    assert stats.prompt_tokens == cli_prompt_tokens  # text tokens + the image's, known before decoding
    chunks = llm.mtmd.tokenize(llm.chat_prompt(llm_messages(messages, llm)), [assets["img1"]])
    assert chunks.n_media_tokens == cli_image_tokens and chunks.n_tokens == cli_prompt_tokens


def llm_messages(messages: list[dict], llm) -> list[dict]:
    from llamapy.mtmd import flatten_messages

    return flatten_messages(messages, llm.mtmd.marker)[0]


def test_two_images_in_one_prompt_equal_llama_mtmd_cli(llm, mtmd_cli, model_path, assets):
    prompt = "Compare the two images."
    images = [assets["img1"], assets["img2"]]
    expected, cli_image_tokens, cli_prompt_tokens = oracle(mtmd_cli, model_path, assets["proj"], images, prompt,
                                                           SETTINGS["max_tokens"])
    messages = [{"role": "user", "content": [image_part(images[0]), image_part(images[1]),
                                             {"type": "text", "text": prompt}]}]
    text, stats = llm.chat_with_stats(messages)
    assert text.strip() == expected
    assert cli_image_tokens == 2 * N_IMAGE_TOKENS
    assert stats.prompt_tokens == cli_prompt_tokens
    swapped = [{"role": "user", "content": [image_part(images[1]), image_part(images[0]),
                                            {"type": "text", "text": prompt}]}]
    assert llm.chat_with_stats(swapped)[1].prompt_tokens_decoded > N_IMAGE_TOKENS  # order matters: re-decoded


def test_low_level_eval_matches_llm(model, assets, llm):
    from llamapy import Context
    from llamapy.mtmd import ChunkType, MtmdContext

    prompt = "<|im_start|>user\n<__media__>Describe the image.<|im_end|>\n<|im_start|>assistant\n"
    with MtmdContext(assets["proj"], model, n_threads=2) as mctx, Context(model, n_ctx=256, n_threads=2) as ctx:
        assert mctx.supports_vision and not mctx.supports_audio and not mctx.uses_mrope
        assert mctx.marker == MtmdContext.default_marker() == "<__media__>"
        chunks = mctx.tokenize(prompt, [assets["img1"]])
        assert [c.type for c in chunks] == [ChunkType.TEXT, ChunkType.IMAGE, ChunkType.TEXT]
        image = chunks[1]
        assert image.n_tokens == image.n_pos == N_IMAGE_TOKENS and len(image.id) == 64
        assert chunks[0].tokens == model.vocab.tokenize("<|im_start|>user\n", False, True)
        embd = mctx.encode(image)
        assert embd.shape == (N_IMAGE_TOKENS, model.n_embd_inp) and np.isfinite(embd).all()
        n_past = mctx.eval(ctx, chunks)
        assert n_past == chunks.n_pos == ctx.memory.seq_pos_max(0) + 1
        first = int(np.argmax(ctx.logits(-1)))
    text = llm.generate(prompt, media=[assets["img1"]], max_tokens=1)
    assert text == model.vocab.token_to_piece(first)


# -- prefix reuse --------------------------------------------------------------------------
def test_image_then_text_turns_reuse_the_prefix(llm, model_path, assets):
    from llamapy import LLM

    messages = [{"role": "user", "content": [image_part(assets["img2"]), {"type": "text", "text": "What is this?"}]}]
    reply, stats = llm.chat_with_stats(messages, max_tokens=6)
    assert stats.prompt_tokens_decoded > N_IMAGE_TOKENS  # a new image: decoded with what follows it
    for question in ("Tell me more.", "Thanks. And the colours?"):
        messages += [{"role": "assistant", "content": reply}, {"role": "user", "content": question}]
        reply, stats = llm.chat_with_stats(messages, max_tokens=6)
        new_text = len(llm.vocab.tokenize(f"{question}<|im_end|>\n<|im_start|>assistant\n", False, True))
        assert stats.prompt_tokens_decoded <= new_text + 8 < N_IMAGE_TOKENS + new_text  # the image is not redone
        assert stats.prompt_tokens > N_IMAGE_TOKENS + stats.prompt_tokens_decoded
    with LLM(model_path, mmproj=assets["proj"], **SETTINGS) as fresh:  # the same turn, decoded from scratch
        again, fresh_stats = fresh.chat_with_stats(messages, max_tokens=6)
    assert fresh_stats.prompt_tokens_decoded == fresh_stats.prompt_tokens == stats.prompt_tokens
    assert again == reply


def test_the_same_image_from_any_source_is_the_same_media(llm, assets):
    from llamapy.mtmd import Bitmap

    mctx = llm.mtmd
    data = assets["img1"].read_bytes()
    sources = [assets["img1"], str(assets["img1"]), assets["img1"].as_uri(), data,
               "data:image/png;base64," + base64.b64encode(data).decode(),
               {"type": "image_url", "image_url": {"url": assets["img1"].as_uri()}},
               {"type": "image", "image": data}]
    bitmaps = [mctx.load(s) for s in sources]
    assert len({b.id for b in bitmaps}) == 1
    assert (bitmaps[0].nx, bitmaps[0].ny) == (40, 30)
    pixels = bitmaps[0].to_array()
    assert pixels.shape == (30, 40, 3) and pixels.dtype == np.uint8
    from_array = Bitmap.from_array(pixels)
    assert np.array_equal(from_array.to_array(), pixels)
    assert Bitmap.from_array(pixels).id == from_array.id != Bitmap.from_array(pixels[::-1]).id
    assert Bitmap.from_array(pixels.astype(np.float32) / 255).id == from_array.id
    grey = Bitmap.from_array(pixels[:, :, 0])
    assert grey.to_array().shape == (30, 40, 3)
    chunks = mctx.tokenize("Look: <__media__>", [pixels])
    assert chunks.n_media_tokens == N_IMAGE_TOKENS
    from_array.close()
    from_array.close()
    with pytest.raises(Exception, match="closed"):
        from_array.nx


def test_pil_images(llm, assets):
    from PIL import Image
    img = Image.open(assets["img1"])
    assert llm.mtmd.load(img).id == llm.mtmd.load(np.asarray(img.convert("RGB"))).id


def test_prompt_length_is_known_before_decoding(llm, assets):
    from llamapy import PromptTooLongError

    n_ctx = llm.n_ctx
    words = n_ctx - 40
    for _ in range(3):  # a text that fits alone, but not with the image's tokens
        text = " ".join(["word"] * words)
        n_text = len(llm.tokenize(llm.chat_prompt([{"role": "user", "content": text}])))
        words += n_ctx - 8 - n_text
    assert n_ctx - N_IMAGE_TOKENS < n_text < n_ctx
    before = llm.ctx.memory.seq_pos_max(0)
    messages = [{"role": "user", "content": [image_part(assets["img1"]), {"type": "text", "text": text}]}]
    with pytest.raises(PromptTooLongError, match=f"context holds {n_ctx}"):
        llm.chat(messages)
    assert llm.ctx.memory.seq_pos_max(0) == before  # nothing was decoded


# -- batching --------------------------------------------------------------------------------
def test_batch_of_image_requests_matches_one_at_a_time(llm, model_path, assets):
    from llamapy import BatchGenerator, BatchRequest

    prompts = [("<__media__>Describe the image.", [assets["img1"]]),
               ("Compare <__media__> and <__media__>:", [assets["img1"], assets["img2"]]),
               ("A prompt with no image.", None)]
    expected = [llm.generate(p, media=m, max_tokens=6) if m else llm.generate(p, max_tokens=6) for p, m in prompts]
    settings = {k: v for k, v in SETTINGS.items() if k not in ("n_ctx", "n_threads", "max_tokens")}
    with BatchGenerator(model_path, n_ctx=512, n_seq_max=3, n_threads=2, mmproj=assets["proj"], max_tokens=6,
                        **settings) as gen:
        responses = gen.generate_responses([BatchRequest(i, p, media=m) for i, (p, m) in enumerate(prompts)])
        assert [r.response for r in responses] == expected
        assert [r.error for r in responses] == [None] * 3
        assert responses[1].stats.prompt_tokens > 2 * N_IMAGE_TOKENS
        bad = gen.generate_responses([BatchRequest("end", "<__media__>", media=[assets["img1"]])])[0]
        assert bad.finish_reason == "error" and "end with text" in str(bad.error)
    with BatchGenerator(model_path, n_ctx=256, n_seq_max=1, n_threads=2) as plain:
        refused = plain.generate_responses([BatchRequest(0, "<__media__>Hi", media=[assets["img1"]])])[0]
        assert type(refused.error).__name__ == "NoProjectorError"


# -- the server ------------------------------------------------------------------------------
def test_server_takes_image_parts(model_path, assets):
    import httpx
    import fastapi  # noqa: F401  (the server extra)
    from llamapy import LLM
    from llamapy.server import ServerLauncher

    data_url = "data:image/png;base64," + base64.b64encode(assets["img1"].read_bytes()).decode()
    messages = [{"role": "user", "content": [{"type": "text", "text": "Describe the image."},
                                             {"type": "image_url", "image_url": {"url": data_url}}]}]
    body = {"messages": messages, "temperature": 0, "max_tokens": 6}
    with LLM(model_path, mmproj=assets["proj"], n_ctx=1024, n_threads=2, temperature=0, repeat_penalty=1.0,
             add_bos=None, max_tokens=6) as local:
        expected = local.chat(messages)
    with ServerLauncher(model_path, port=0, server_binary="llamapy", n_parallel=2, n_ctx=2048, n_threads=2,
                        extra_args=["--log-level", "warning", "--mmproj", str(assets["proj"])]) as server, \
            httpx.Client(base_url=server.url, timeout=120) as http:
        r = http.post("/v1/chat/completions", json=body)
        assert r.status_code == 200, r.text
        answer = r.json()
        assert answer["choices"][0]["message"]["content"] == expected
        assert answer["usage"]["prompt_tokens"] > N_IMAGE_TOKENS
        file_part = {"type": "image_url", "image_url": {"url": assets["img1"].as_uri()}}
        r = http.post("/v1/chat/completions", json={**body, "messages": [
            {"role": "user", "content": [messages[0]["content"][0], file_part]}]})
        assert r.status_code == 400 and "data: URL" in r.json()["error"]["message"], r.text  # no file reads
        junk = base64.b64encode(b"\x89PNG\r\n\x1a\njunk").decode()
        broken = {"type": "image_url", "image_url": {"url": "data:image/png;base64," + junk}}
        r = http.post("/v1/chat/completions", json={**body, "messages": [{"role": "user", "content": [broken]}]})
        assert r.status_code == 400 and "PNG" in r.json()["error"]["message"], r.text


# -- the reference API -----------------------------------------------------------------------
def test_reference_multimodal_example_runs(model_path, assets, tmp_path, monkeypatch):
    from llamapy import LlamaContext, LlamaModel
    from tests.test_reference_examples import REFERENCE, _map_names

    text = (REFERENCE / "cyllama-api.md").read_text()
    section = text.split("## Multimodal Support", 1)[1]
    code = section.split("```python", 1)[1].split("```", 1)[0]
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "mmproj.gguf").write_bytes(assets["proj"].read_bytes())
    (tmp_path / "image.jpg").write_bytes(assets["img1"].read_bytes())
    monkeypatch.chdir(tmp_path)
    model = LlamaModel(str(model_path))
    ctx = LlamaContext(model, n_ctx=256, n_threads=2)
    namespace = {"ctx": ctx}
    exec(compile(_map_names(code), "<multimodal example>", "exec"), namespace)
    embed = namespace["image_embed"]
    assert embed.n_image_pos == N_IMAGE_TOKENS
    assert embed.n_past == ctx.memory.seq_pos_max(0) + 1 == N_IMAGE_TOKENS
    from llamapy.mtmd import LlavaImageEmbed, process_image

    assert isinstance(embed, LlavaImageEmbed)
    again = process_image(ctx=ctx, image_path=assets["img2"], mmproj=namespace["mmproj"])
    assert again.n_past == 2 * N_IMAGE_TOKENS  # continues where the sequence ended


# -- memory ----------------------------------------------------------------------------------
def test_memory_estimate_counts_the_projector(model_path, assets):
    from llamapy import estimate_memory_usage
    from llamapy.gguf import GGUFFile

    with GGUFFile.open(assets["proj"]) as g:
        weights = sum(t.n_bytes for t in g.tensors)
    plain = estimate_memory_usage(model_path, 512)
    with_proj = estimate_memory_usage(model_path, 512, mmproj=assets["proj"])
    assert with_proj.weights_size - plain.weights_size == weights
    assert with_proj.graph_size > plain.graph_size
    assert with_proj.total_size == plain.total_size + weights + (with_proj.graph_size - plain.graph_size)


# -- the command line ------------------------------------------------------------------------
def test_cli_complete_and_chat_with_images(llm, model_path, assets):
    common = ["-m", str(model_path), "--mmproj", str(assets["proj"]), "-t", "0", "-n", "6", "--threads", "2",
              "--ctx", "1024"]
    cli = [sys.executable, "-m", "llamapy.cli"]
    proc = subprocess.run([*cli, "complete", *common, "--image", str(assets["img1"]), "--image", str(assets["img2"]),
                           "Compare the two images:"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    expected = llm.generate("Compare the two images:", media=[assets["img1"], assets["img2"]], max_tokens=6)
    assert proc.stdout.strip() == expected.strip()
    proc = subprocess.run([*cli, "chat", *common, "--image", str(assets["img1"])], input="Describe the image.",
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    messages = [{"role": "user", "content": [image_part(assets["img1"]),
                                             {"type": "text", "text": "Describe the image."}]}]
    assert proc.stdout.strip() == llm.chat(messages, max_tokens=6).strip()
    proc = subprocess.run([*cli, "complete", "-m", str(model_path), "--image", str(assets["img1"]), "Hi"],
                          capture_output=True, text=True)
    assert proc.returncode != 0 and "--mmproj" in proc.stderr


def test_chat_repl_attaches_images(llm, model_path, assets, tmp_path):
    import pexpect
    env = {**os.environ, "TERM": "dumb"}
    args = ["-m", "llamapy.cli", "chat", "-m", str(model_path), "--mmproj", str(assets["proj"]), "-t", "0", "-n", "6",
            "--threads", "2", "--ctx", "1024"]
    # timeout: a guard so that a broken REPL fails the test instead of hanging it
    child = pexpect.spawn(sys.executable, args, env=env, encoding="utf-8", timeout=600, dimensions=(40, 200))
    try:
        child.expect_exact("> ")
        child.sendline(f"/image {assets['img1']}")
        child.expect_exact("(attached")
        child.sendline(f"/image {tmp_path / 'missing.png'}")
        child.expect_exact("error: no such file")
        child.sendline("Describe the image.")
        child.expect_exact("Describe the image.")  # the terminal's echo
        child.expect_exact("> ")
        reply = child.before.strip()
        child.sendline(f"/save {tmp_path / 'conv.json'}")
        child.expect_exact("(saved to")
        child.sendline("/exit")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    messages = [{"role": "user", "content": [image_part(assets["img1"]),
                                             {"type": "text", "text": "Describe the image."}]}]
    assert reply == llm.chat(messages, max_tokens=6).strip()
    saved = json.loads((tmp_path / "conv.json").read_text())["messages"]
    assert saved[0]["content"][0]["type"] == "image_url" and saved[0]["content"][1]["text"] == "Describe the image."


LIFETIMES = r"""
import gc, sys
from llamapy import Context, Model
from llamapy.mtmd import MtmdContext
model_path, proj, image = sys.argv[1:4]
model = Model.from_file(model_path)
mctx = MtmdContext(proj, model, n_threads=1)
ctx = Context(model, n_ctx=128, n_threads=1)
chunks = mctx.tokenize("<__media__>hi", [image])
image_chunk = chunks[0]
del chunks
gc.collect()
other = MtmdContext(proj, model, n_threads=1)
model.close()  # the projectors and the context keep what they need
assert mctx.eval(ctx, image_chunk) == 16
assert mctx.encode(image_chunk).shape == (16, 576)
try:
    other.eval(ctx, image_chunk)
    raise SystemExit("chunks of another context were accepted")
except ValueError as e:
    assert "another MtmdContext" in str(e)
mctx.close(); mctx.close()
try:
    mctx.tokenize("x")
    raise SystemExit("a closed context tokenized")
except Exception as e:
    assert type(e).__name__ == "ClosedError", e
print(image_chunk.n_tokens, image_chunk.chunks.n_tokens)
del mctx, other, ctx, image_chunk
gc.collect()
print("ok")
"""


def test_lifetimes(model_path, assets):
    proc = run_python(LIFETIMES.replace("sys.argv[1:4]", repr([str(model_path), str(assets["proj"]),
                                                               str(assets["img1"])])))
    assert proc.returncode == 0 and proc.stdout.split() == ["16", "17", "ok"], proc.stdout + proc.stderr[-2000:]


# -- bad input ------------------------------------------------------------------------------
BAD_INPUTS = r"""
import json, sys
from llamapy import LLM, Model
from llamapy.mtmd import MtmdContext
model_path, proj, narrow, image = sys.argv[1:5]
results = {}
def attempt(name, fn):
    try:
        fn()
        results[name] = ["no error", ""]
    except Exception as e:
        results[name] = [type(e).__name__, str(e)]
model = Model.from_file(model_path)
attempt("narrow", lambda: MtmdContext(narrow, model, n_threads=1))
attempt("text model as projector", lambda: MtmdContext(model_path, model, n_threads=1))
attempt("missing projector", lambda: MtmdContext(proj + ".missing", model, n_threads=1))
mctx = MtmdContext(proj, model, n_threads=1)
data = open(image, "rb").read()
attempt("truncated png", lambda: mctx.load(data[:60]))
attempt("garbage", lambda: mctx.load(b"\x00\x01" * 500))
attempt("webp", lambda: mctx.load(b"RIFF\x24\x00\x00\x00WEBPVP8 " + b"\x00" * 40))
attempt("tiff", lambda: mctx.load(b"II*\x00" + b"\x00" * 200))
attempt("text file", lambda: mctx.load(b"just some text, not an image\n" * 10))
attempt("empty", lambda: mctx.load(b""))
attempt("missing image", lambda: mctx.load(image + ".missing"))
attempt("bad data url", lambda: mctx.load("data:image/png;base64,@@@"))
attempt("http url", lambda: mctx.load("https://example.com/cat.jpg"))
attempt("bad array", lambda: mctx.load(__import__("numpy").zeros((4, 4, 2), dtype="uint8")))
attempt("markers", lambda: mctx.tokenize("<__media__> and <__media__>", [image]))
from llamapy.mtmd import Bitmap
attempt("audio without encoder", lambda: mctx.tokenize("<__media__>", [Bitmap.from_audio([0.0] * 16000)]))
import base64, io, wave
wav = io.BytesIO()
with wave.open(wav, "wb") as w:
    w.setnchannels(1); w.setsampwidth(2); w.setframerate(16000); w.writeframes(b"\x00\x01" * 16000)
part = {"type": "input_audio", "input_audio": {"data": base64.b64encode(wav.getvalue()).decode(), "format": "wav"}}
attempt("wav without encoder", lambda: mctx.load(part))
llm = LLM(model_path, n_ctx=256, n_threads=1, max_tokens=2)
msg = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": image}},
                                    {"type": "text", "text": "Hi"}]}]
attempt("no projector", lambda: llm.chat(msg))
attempt("unknown part", lambda: llm.chat([{"role": "user", "content": [{"type": "video", "video": "x"}]}]))
results["still works"] = [llm.chat([{"role": "user", "content": [{"type": "text", "text": "Hi"}]}]) is not None, ""]
print(json.dumps(results))
"""


def test_bad_inputs_are_clear_errors_not_crashes(model_path, assets):
    proc = run_python(BAD_INPUTS.replace("sys.argv[1:5]", repr([str(model_path), str(assets["proj"]),
                                                                 str(assets["narrow"]), str(assets["img1"])])))
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    assert r["narrow"][0] == "ProjectorError" and "576" in r["narrow"][1] and "64" in r["narrow"][1]
    assert "another text model" in r["narrow"][1]
    assert r["text model as projector"][0] == "ProjectorError" and "not a projector" in r["text model as projector"][1]
    assert r["missing projector"][0] == "FileNotFoundError"
    for name in ("truncated png", "garbage", "webp", "tiff", "text file", "empty", "bad array", "markers",
                 "audio without encoder", "http url"):
        assert r[name][0] == "MediaError", (name, r[name])
    assert "WebP" in r["webp"][1] and "PNG" in r["webp"][1]  # names the format and what is supported
    assert "TIFF" in r["tiff"][1] and "not a supported" in r["tiff"][1]
    assert "corrupt or truncated" in r["truncated png"][1] and "PNG" in r["truncated png"][1]
    assert "ffprobe" not in r["garbage"][1]
    assert r["wav without encoder"][0] == "MediaError" and "no audio encoder" in r["wav without encoder"][1]
    assert r["missing image"][0] == "FileNotFoundError"
    assert r["bad data url"][0] in ("MediaError",), r["bad data url"]
    assert r["no projector"][0] == "NoProjectorError" and "mmproj" in r["no projector"][1]
    assert r["unknown part"][0] == "MediaError"
    assert r["still works"][0] is True
