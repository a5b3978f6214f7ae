"""NgramCache: counting, drafting from context/dynamic/static caches, files (llama.cpp's layout)."""
from __future__ import annotations

import subprocess

import numpy as np
import pytest

from llamapy import NgramCache
from llamapy.generation.ngram_cache import NgramCacheError


def test_reference_example_runs(tmp_path):
    # the reference's example, as written
    cache = NgramCache()
    tokens = [1, 2, 3, 4, 5, 6, 7, 8]
    cache.update(tokens, ngram_min=2, ngram_max=4)
    input_tokens = [1, 2, 3]
    draft_tokens = cache.draft(input_tokens, n_draft=16)
    cache.save(tmp_path / "patterns.bin")
    loaded_cache = NgramCache.from_file(tmp_path / "patterns.bin")
    assert draft_tokens == [4, 5, 6, 7, 8]  # follows the learnt sequence to its end
    assert loaded_cache == cache and len(cache) == 6 + 5 + 4  # 2-, 3- and 4-grams
    cache.clear()
    assert len(cache) == 0 and cache.draft(input_tokens) == []


def test_counts_and_incremental_update():
    seq = [5, 6, 7, 5, 6, 8, 5, 6, 7]
    whole = NgramCache()
    whole.update(seq, 1, 4)
    grown = NgramCache()
    for n in range(1, len(seq) + 1):  # appended one token at a time
        grown.update(seq[:n], 1, 4, n_new=1)
    assert grown == whole
    assert whole.counts([5, 6]) == {7: 2, 8: 1}
    assert whole.counts([5]) == {6: 3}
    assert whole.counts(np.array([7, 5, 6])) == {8: 1}
    assert whole.counts([9]) == {}


def test_draft_prefers_the_longest_ngram_and_stops_when_unsure():
    cache = NgramCache()
    # after "1 2" comes 3 twice and 4 once, but after "9 1 2" always 4
    cache.update([1, 2, 3, 0, 1, 2, 3, 0, 9, 1, 2, 4, 0], 1, 4)
    assert cache.draft([7, 9, 1, 2], n_draft=1) == [4]
    assert cache.draft([7, 8, 1, 2], n_draft=1) == [3]
    assert cache.draft([7, 8, 1, 2], n_draft=0) == []
    # a 1-gram seen once is below the context cache's threshold (2): nothing is drafted
    lone = NgramCache()
    lone.update([10, 11], 1, 1)
    assert lone.draft([3, 10]) == []
    lone.update([10, 11], 1, 1)
    assert lone.draft([3, 10], n_draft=3) == [11]


def test_dynamic_and_static_caches():
    context = NgramCache()
    dynamic = NgramCache()
    for _ in range(4):  # seen often enough for the strict thresholds
        dynamic.update([20, 21, 22, 23], 1, 4)
    assert context.draft([20, 21], n_draft=2, dynamic=dynamic) == [22, 23]
    # static 2-grams answer when nothing else does, and weigh the context's candidates
    static = NgramCache()
    static.update([30, 31, 32] * 3, 2, 2)
    assert context.draft([5, 30, 31], n_draft=2, static=static) == [32, 30]
    context.update([40, 41, 1, 40, 41, 2], 2, 2)  # after "40 41": 1 and 2, a tie
    weights = NgramCache()
    weights.update([40, 41, 2, 40, 41, 2], 2, 2)
    assert context.draft([40, 41], n_draft=1) == [1]
    assert context.draft([40, 41], n_draft=1, static=weights) == [2]


def test_merge():
    a, b, both = NgramCache(), NgramCache(), NgramCache()
    a.update([1, 2, 3], 1, 2)
    b.update([1, 2, 4, 5], 1, 2)
    both.update([1, 2, 3], 1, 2)
    both.update([1, 2, 4, 5], 1, 2)
    a.merge(b)
    assert a == both and a.counts([1, 2]) == {3: 1, 4: 1}


def test_file_round_trip_and_layout(tmp_path):
    cache = NgramCache()
    cache.update([3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7, 9, 3, 2, 3, 8, 4, 6, 2, 6, 4, 3, 3, 8, 3, 2, 7, 9, 5], 1, 4)
    path = tmp_path / "c.bin"
    cache.save(path)
    again = NgramCache.from_file(path)
    assert again == cache and len(again) == len(cache)
    words = np.fromfile(path, dtype="<i4")
    # first record: a padded n-gram, its continuation count, then (token, count) pairs
    size = 4 - int((words[:4] == -1).sum())
    assert 1 <= size <= 4 and words[4] >= 1 and words.size == 5 * len(cache) + 2 * sum(
        len(cache.counts(k)) for k in _keys(words))


def _keys(words: np.ndarray) -> list[tuple[int, ...]]:
    keys, i = [], 0
    while i < len(words):
        keys.append(tuple(int(t) for t in words[i:i + 4] if t != -1))
        i += 5 + 2 * int(words[i + 4])
    return keys


@pytest.mark.parametrize("damage, message", [
    (lambda b: b[:-2], "whole number of 32-bit words"),
    (lambda b: b[:-8], "bad continuation count"),
    (lambda b: b[:12], "ends inside the record"),
    (lambda b: np.array([-1, -1, -1, -1, 1, 2, 3], "<i4").tobytes(), "bad n-gram token ids"),
    (lambda b: np.array([1, -1, 2, -1, 1, 2, 3], "<i4").tobytes(), "bad n-gram token ids"),
    (lambda b: np.array([1, -1, -1, -1, 0], "<i4").tobytes(), "bad continuation count"),
    (lambda b: np.array([1, -1, -1, -1, 1, 2, 0], "<i4").tobytes(), "non-positive count"),
    (lambda b: b"GGUF" + bytes(range(200)) * 3, "not a valid n-gram cache"),
])
def test_corrupt_files_are_clear_errors(tmp_path, damage, message):
    good = tmp_path / "good.bin"
    cache = NgramCache()
    cache.update([1, 2, 3, 1, 2, 4], 1, 2)
    cache.save(good)
    bad = tmp_path / "bad.bin"
    bad.write_bytes(damage(good.read_bytes()))
    with pytest.raises(NgramCacheError, match=message):
        NgramCache.from_file(bad)


def test_missing_file_and_bad_arguments(tmp_path):
    with pytest.raises(FileNotFoundError):
        NgramCache.from_file(tmp_path / "nope.bin")
    empty = tmp_path / "empty.bin"
    empty.write_bytes(b"")
    assert len(NgramCache.from_file(empty)) == 0
    cache = NgramCache()
    with pytest.raises(ValueError, match="ngram_min"):
        cache.update([1, 2, 3], 0, 2)
    with pytest.raises(ValueError, match="ngram_max"):
        cache.update([1, 2, 3], 1, 5)
    with pytest.raises(ValueError, match=">= 0"):
        cache.update([1, -2, 3])
    with pytest.raises(ValueError, match="n_draft"):
        cache.draft([1, 2], n_draft=-1)


def test_files_from_llama_cpp_lookup_tools(tmp_path, model, model_path, llama_lookup_tools):
    """llama.cpp's lookup-create counts 2-grams of a text into a static cache: the same counts
    as NgramCache.update on the same tokens, and its file loads here (and ours in lookup-merge)."""
    text = "the cat sat on the mat and the cat ate the rat; the cat sat on the hat. " * 3
    theirs = tmp_path / "static.bin"
    subprocess.run([str(llama_lookup_tools / "llama-lookup-create"), "-m", str(model_path), "-p", text,
                    "-lcs", str(theirs), "-t", "2"], check=True, capture_output=True)
    ours = NgramCache()
    ours.update(model.vocab.tokenize(text, add_special=True, parse_special=True), 2, 2)
    loaded = NgramCache.from_file(theirs)
    assert loaded == ours and len(ours) > 10
    # llama-lookup-merge reads our file and writes the sum of two caches
    mine = tmp_path / "mine.bin"
    ours.save(mine)
    merged = tmp_path / "merged.bin"
    subprocess.run([str(llama_lookup_tools / "llama-lookup-merge"), str(mine), str(theirs), str(merged)],
                   check=True, capture_output=True)
    doubled = NgramCache()
    doubled.merge(ours)
    doubled.merge(ours)
    assert NgramCache.from_file(merged) == doubled


@pytest.fixture(scope="module")
def llama_lookup_tools(info):
    import sys
    from pathlib import Path

    from tests.conftest import REPO

    sys.path.insert(0, str(REPO))
    from tools.cmake_build import build_tools

    return build_tools(Path(info["llama_cpp"]["build_dir"]), ["llama-lookup-create", "llama-lookup-merge"])
