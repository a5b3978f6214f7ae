"""Memory planning: how much memory a model needs, and how many layers fit on the GPU.

The analytic estimate reads only GGUF metadata and tensor sizes (no model load, no GPU):
weights per layer and for the input/output layers, the KV cache from the hyperparameters,
and a compute-buffer estimate. The exact mode asks llama.cpp itself: it loads the model
with ``no_alloc`` and creates a context, which sizes every buffer without allocating it.
"""
from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .. import rpc
from .._ffi import ffi, lib
from ..errors import LlamaError
from ..gguf.file import GGUFFile

MiB = 1 << 20
KV_PAD = 256  # llama.cpp sizes the KV cache in multiples of 256 cells
_TYPE_SIZES = {"f32": (4, 1), "f16": (2, 1), "bf16": (2, 1), "q8_0": (34, 32), "q5_1": (24, 32), "q5_0": (22, 32),
               "q4_1": (20, 32), "q4_0": (18, 32), "iq4_nl": (18, 32)}


class EstimateError(LlamaError, ValueError):
    """The estimate cannot be made (unknown architecture details, bad arguments, no room)."""


@dataclass(frozen=True)
class SwaLayout:
    """Which layers of an architecture attend through a sliding window, as llama.cpp's loader
    decides it when the GGUF file leaves something out (``src/models/<arch>.cpp``).

    ``period``: the ``sliding_window_pattern`` used when the file has none (every period-th
    layer has full attention); None: the file must carry the per-layer pattern array.
    """

    period: int | None
    dense_first: bool = False  # the full-attention layer opens each period instead of closing it
    window: int | None = None  # sliding_window when the file has none (None: the file must have it)
    optional: bool = False  # without a (non-zero) sliding_window key the model has no SWA layers
    fixed_window: int | None = None  # the window llama.cpp uses whatever the file says
    n_layer: int | None = None  # SWA only for this depth (EXAONE 4.0: the 32B model)
    kv_from_start: int | None = None  # only the first layers keep a KV cache; the rest reuse it


# Architectures whose loader reads the sliding-window keys. Any other architecture has no
# SWA layers in llama.cpp, even when its file carries the keys (phi3 files do, for example).
SWA_LAYOUTS: dict[str, SwaLayout] = {
    "gemma2": SwaLayout(2, window=4096),
    "gemma3": SwaLayout(6, optional=True),
    "gemma3n": SwaLayout(5, kv_from_start=20),
    "cohere2": SwaLayout(4),
    "cohere2moe": SwaLayout(4, dense_first=True),
    "olmo2": SwaLayout(4, optional=True),
    "plamo3": SwaLayout(8, optional=True),
    "llama4": SwaLayout(4, window=8192, fixed_window=8192),  # chunked attention; sliding_window=0 turns it off
    "gpt-oss": SwaLayout(2),
    "muse-glimmer": SwaLayout(4),
    "exaone-moe": SwaLayout(4),
    "exaone4": SwaLayout(4, window=4096, n_layer=64),
    "afmoe": SwaLayout(4, optional=True),
    "mellum": SwaLayout(4, optional=True),
    "laguna": SwaLayout(4, dense_first=True, optional=True),
    "smallthinker": SwaLayout(4, dense_first=True, optional=True, fixed_window=4096),
    **{arch: SwaLayout(None) for arch in ("gemma4", "gemma4-assistant", "granite_swa", "mimo2", "step35",
                                          "spark2_5", "maple", "dots3note")},
}

# Encoders and diffusion models: llama.cpp gives their contexts no KV cache at all.
NO_KV_CACHE = frozenset({"bert", "modern-bert", "nomic-bert", "nomic-bert-moe", "neo-bert", "jina-bert-v2",
                         "jina-bert-v3", "eurobert", "gemma-embedding", "wavtokenizer-dec", "dream", "llada",
                         "llada-moe", "rnd1"})


@dataclass
class DeviceMemory:
    """Bytes one device (or the host) needs."""

    name: str
    weights: int = 0
    kv: int = 0
    compute: int = 0

    @property
    def total(self) -> int:
        return self.weights + self.kv + self.compute


@dataclass
class MemoryEstimate:
    """Where the memory of a model + context goes, per GPU device and on the host.

    The first six fields are the summary users of other bindings read (bytes); ``devices``
    and ``host`` hold the breakdown they are summed from. Build one with :meth:`of`.
    """

    layers: int  # layers of the model
    graph_size: int  # compute buffers on all devices and the host
    vram: int  # everything on the GPU devices
    vram_kv: int  # KV cache on the GPU devices
    total_size: int  # everything, everywhere
    tensor_split: list[float]  # share of the offloaded layers per GPU device
    n_gpu_layers: int
    n_ctx: int
    devices: list[DeviceMemory]
    host: DeviceMemory
    exact: bool = False

    @classmethod
    def of(cls, layers: int, n_gpu_layers: int, n_ctx: int, devices: list[DeviceMemory], host: DeviceMemory,
           exact: bool = False, tensor_split: Sequence[float] = ()) -> MemoryEstimate:
        vram = sum(d.total for d in devices)
        return cls(layers, host.compute + sum(d.compute for d in devices), vram, sum(d.kv for d in devices),
                   host.total + vram, list(tensor_split), n_gpu_layers, n_ctx, devices, host, exact)

    @property
    def vram_weights(self) -> int:
        return sum(d.weights for d in self.devices)

    @property
    def weights_size(self) -> int:
        return self.host.weights + self.vram_weights

    @property
    def kv_size(self) -> int:
        return self.host.kv + self.vram_kv

    def as_dict(self) -> dict[str, Any]:
        return {
            "layers": self.layers, "n_gpu_layers": self.n_gpu_layers, "n_ctx": self.n_ctx, "exact": self.exact,
            "tensor_split": self.tensor_split, "vram": self.vram, "vram_kv": self.vram_kv,
            "weights": self.weights_size, "kv": self.kv_size, "compute": self.graph_size, "total": self.total_size,
            "devices": [vars(d) | {"total": d.total} for d in self.devices],
            "host": vars(self.host) | {"total": self.host.total},
        }


@dataclass(frozen=True)
class ModelShape:
    """The hyperparameters the estimate needs, read from GGUF metadata."""

    arch: str
    n_layer: int
    n_embd: int
    n_head: int
    n_head_kv: tuple[int, ...]  # per layer
    head_k: int
    head_v: int
    n_vocab: int
    n_ff: int
    n_ctx_train: int
    n_swa: int
    swa_layers: tuple[bool, ...]  # per layer: attention limited to the sliding window
    kv_layers: tuple[bool, ...]  # per layer: keeps its own KV cache (False: shares an earlier layer's)
    recurrent_bytes: tuple[int, ...]  # per layer: recurrent state of one sequence (0: attention layer)
    layer_bytes: tuple[int, ...]  # weights of blk.i
    input_bytes: int  # token embeddings (kept on the host by llama.cpp)
    output_bytes: int  # output norm/head (on the GPU only when every layer is)


def _need(g: GGUFFile, key: str, path: Path) -> Any:
    if key not in g:
        raise EstimateError(f"{path.name}: missing metadata key {key!r}, needed to estimate memory "
                            f"for this architecture")
    return g[key]


def read_shape(path: str | os.PathLike) -> ModelShape:
    """The hyperparameters and tensor sizes of a GGUF model (metadata only)."""
    p = Path(path).expanduser()
    with GGUFFile.open(p) as g:
        arch = str(_need(g, "general.architecture", p))
        n_layer = int(_need(g, f"{arch}.block_count", p))
        n_embd = int(_need(g, f"{arch}.embedding_length", p))
        recurrent_state = _recurrent_state(g, arch, n_embd, p)
        heads = g.get(f"{arch}.attention.head_count", 0 if recurrent_state else None)
        if heads is None:
            _need(g, f"{arch}.attention.head_count", p)
        n_head = int(np.max(heads)) if isinstance(heads, np.ndarray) else int(heads)
        kv = g.get(f"{arch}.attention.head_count_kv", heads)
        n_head_kv = tuple(int(x) for x in kv) if isinstance(kv, np.ndarray) else (int(kv),) * n_layer
        if recurrent_state and not isinstance(kv, np.ndarray) and n_head_kv[0] == 0:
            recurrent = (recurrent_state,) * n_layer  # every layer is recurrent
        elif recurrent_state:  # hybrid: layers without KV heads are the recurrent ones
            recurrent = tuple(recurrent_state if h == 0 else 0 for h in n_head_kv)
        else:
            recurrent = (0,) * n_layer
        head_k = int(g.get(f"{arch}.attention.key_length", n_embd // n_head if n_head else 0))
        head_v = int(g.get(f"{arch}.attention.value_length", n_embd // n_head if n_head else 0))
        n_swa, swa, kv_layers = _sliding_window(g, arch, n_layer, p)
        if "tokenizer.ggml.tokens" in g:
            n_vocab = int(lib.gguf_get_arr_n(g._ptr, g._key_id("tokenizer.ggml.tokens")))
        else:
            n_vocab = int(_need(g, f"{arch}.vocab_size", p))
        ff = g.get(f"{arch}.feed_forward_length", 4 * n_embd)
        n_ff = int(np.max(ff)) if isinstance(ff, np.ndarray) else int(ff)
        layer_bytes = [0] * n_layer
        input_bytes = output_bytes = 0
        for t in g.tensors:
            m = re.match(r"blk\.(\d+)\.", t.name)
            if m and int(m.group(1)) < n_layer:
                layer_bytes[int(m.group(1))] += t.n_bytes
            elif t.name.startswith(("token_embd", "pos_embd", "token_types")):
                input_bytes += t.n_bytes
            else:
                output_bytes += t.n_bytes
        return ModelShape(arch, n_layer, n_embd, n_head, n_head_kv, head_k, head_v, n_vocab, n_ff,
                          int(g.get(f"{arch}.context_length", 0)), n_swa, swa, kv_layers, recurrent,
                          tuple(layer_bytes), input_bytes, output_bytes)


def _sliding_window(g: GGUFFile, arch: str, n_layer: int, p: Path) -> tuple[int, tuple[bool, ...], tuple[bool, ...]]:
    """The window, which layers use it and which keep a KV cache, as llama.cpp loads them."""
    layout = SWA_LAYOUTS.get(arch)
    kv_layers = tuple(layout is None or layout.kv_from_start is None or i < layout.kv_from_start
                      for i in range(n_layer))
    key = g.get(f"{arch}.attention.sliding_window")
    off = layout is None or key == 0 or (layout.optional and key is None) or \
        (layout.n_layer is not None and layout.n_layer != n_layer)
    if off:
        return 0, (False,) * n_layer, kv_layers
    window = layout.fixed_window or (int(key) if key is not None else layout.window)
    if window is None:
        _need(g, f"{arch}.attention.sliding_window", p)
    pattern = g.get(f"{arch}.attention.sliding_window_pattern", layout.period)
    if pattern is None:
        raise EstimateError(f"{p.name}: {arch} needs the per-layer '{arch}.attention.sliding_window_pattern' "
                            f"array (llama.cpp cannot load the file without it either)")
    if isinstance(pattern, np.ndarray):
        swa = tuple(bool(x) for x in pattern[:n_layer])
    else:
        n = int(pattern)
        if layout.dense_first:
            swa = tuple(n == 0 or i % n != 0 for i in range(n_layer))
        else:
            swa = tuple(n == 0 or i % n < n - 1 for i in range(n_layer))
    return int(window), swa, kv_layers


def _recurrent_state(g: GGUFFile, arch: str, n_embd: int, p: Path) -> int:
    """Bytes of one sequence's recurrent state in one layer (f32), 0 for attention models.

    Mamba-style: conv state (d_conv-1)*(d_inner + 2*groups*d_state) plus ssm state
    d_state*d_inner; RWKV: token shift and wkv states."""
    if f"{arch}.wkv.head_size" in g:
        shift = int(g.get(f"{arch}.token_shift_count", 2))
        return 4 * (shift * n_embd + n_embd * int(g[f"{arch}.wkv.head_size"]))
    if not any(k.startswith(f"{arch}.ssm.") for k in g.keys()):
        return 0
    d_conv = int(_need(g, f"{arch}.ssm.conv_kernel", p))
    d_inner = int(_need(g, f"{arch}.ssm.inner_size", p))
    d_state = int(_need(g, f"{arch}.ssm.state_size", p))
    groups = int(g.get(f"{arch}.ssm.group_count", 0))
    return 4 * ((d_conv - 1) * (d_inner + 2 * groups * d_state) + d_state * d_inner)


def _type_bytes(cache_type: str, n: int) -> int:
    key = cache_type.lower()
    if key not in _TYPE_SIZES:
        raise EstimateError(f"unknown KV cache type {cache_type!r}; choose from {', '.join(_TYPE_SIZES)}")
    size, block = _TYPE_SIZES[key]
    return n * size // block


def _pad(n: int, to: int) -> int:
    return -(-n // to) * to


def _streams(n_seq_max: int, kv_unified: bool) -> int:
    return 1 if kv_unified or n_seq_max == 1 else n_seq_max


def kv_cells(n_ctx: int, n_seq_max: int, kv_unified: bool) -> int:
    """Cells llama.cpp allocates: n_ctx padded, split into padded per-sequence streams
    unless the cache is unified."""
    n_ctx = _pad(n_ctx, KV_PAD)
    streams = _streams(n_seq_max, kv_unified)
    return n_ctx if streams == 1 else _pad(max(1, n_ctx // n_seq_max), KV_PAD) * streams


def _layer_kv(shape: ModelShape, i: int, cells: int, type_k: str, type_v: str, n_seq_max: int, n_ubatch: int,
              kv_unified: bool) -> int:
    """KV cache (or recurrent state) bytes of layer i."""
    if shape.recurrent_bytes[i]:
        return shape.recurrent_bytes[i] * n_seq_max
    if shape.arch in NO_KV_CACHE or not shape.kv_layers[i]:
        return 0
    if shape.swa_layers[i]:  # each stream of a sliding-window layer keeps the window plus a micro-batch
        streams = _streams(n_seq_max, kv_unified)
        window = _pad(shape.n_swa * (n_seq_max if streams == 1 else 1) + n_ubatch, KV_PAD)
        cells = min(cells // streams, window) * streams
    return _type_bytes(type_k, cells * shape.n_head_kv[i] * shape.head_k) + \
        _type_bytes(type_v, cells * shape.n_head_kv[i] * shape.head_v)


def _compute(shape: ModelShape, n_ubatch: int, cells: int, flash_attn: bool) -> int:
    """Compute-buffer estimate: logits of a full micro-batch plus the widest activations;
    without flash attention the attention scores of a micro-batch over the whole cache."""
    size = 4 * n_ubatch * (shape.n_vocab + 4 * shape.n_embd)
    if not flash_attn:
        size += 4 * n_ubatch * cells * shape.n_head
    return size


def _split(n_gpu_layers: int, n_layer: int, shares: Sequence[float]) -> list[list[int]]:
    """Layer indices per device for a layer split: the last n_gpu_layers layers go to the
    GPUs, in proportion to ``shares``."""
    layers = list(range(n_layer - min(n_gpu_layers, n_layer), n_layer))
    bounds = np.cumsum(shares) / (sum(shares) or 1.0)
    out: list[list[int]] = [[] for _ in shares]
    for k, layer in enumerate(layers):
        dev = int(np.searchsorted(bounds, (k + 0.5) / len(layers), side="right"))
        out[min(dev, len(shares) - 1)].append(layer)
    return out


def estimate_memory_usage(
    model_path: str | os.PathLike | ModelShape,
    n_ctx: int | None = 2048,
    n_batch: int = 512,
    n_gpu_layers: int = 0,
    *,
    n_ubatch: int = 512,
    cache_type_k: str = "f16",
    cache_type_v: str | None = None,
    n_seq_max: int = 1,
    flash_attn: bool = True,
    kv_unified: bool = False,
    tensor_split: Sequence[float] | None = None,
    gpu_names: Sequence[str] | None = None,
    exact: bool = False,
    mmproj: str | os.PathLike | None = None,
) -> MemoryEstimate:
    """Memory for a model with a context of ``n_ctx`` (None: the training context).

    ``mmproj`` adds a multimodal projector: its weights and the compute buffer of one encode,
    on the first GPU device when layers are offloaded (libmtmd uses the GPU), else the host.

    ``n_gpu_layers`` layers go to the GPU devices, split by ``tensor_split`` (default:
    evenly over ``gpu_names``). With ``exact=True`` llama.cpp sizes the buffers itself
    (on this machine's devices).
    """
    if n_ctx is not None and n_ctx < 1 or n_seq_max < 1 or n_ubatch < 1:
        raise EstimateError("n_ctx, n_seq_max and n_ubatch must be positive")
    if exact:
        if isinstance(model_path, ModelShape):
            raise EstimateError("the exact mode needs the model file")
        return _with_projector(_exact(model_path, n_ctx, n_batch, n_ubatch, n_gpu_layers, cache_type_k,
                                      cache_type_v or cache_type_k, n_seq_max, flash_attn, kv_unified), mmproj)
    shape = model_path if isinstance(model_path, ModelShape) else read_shape(model_path)
    n_ctx = n_ctx or shape.n_ctx_train or 4096
    type_v = cache_type_v or cache_type_k
    cells = kv_cells(n_ctx, n_seq_max, kv_unified)
    ngl = max(0, min(n_gpu_layers if n_gpu_layers >= 0 else shape.n_layer + 1, shape.n_layer + 1))
    names = list(gpu_names or (["GPU0"] if ngl else []))
    shares = list(tensor_split or [1.0] * len(names))
    if ngl and len(shares) != len(names):
        raise EstimateError(f"tensor_split has {len(shares)} entries for {len(names)} GPU devices")
    devices = [DeviceMemory(n) for n in names]
    host = DeviceMemory("host", weights=shape.input_bytes)
    per_device = _split(ngl, shape.n_layer, shares) if devices else []
    on_gpu = {layer: d for d, layers in enumerate(per_device) for layer in layers}
    for i in range(shape.n_layer):
        kv = _layer_kv(shape, i, cells, cache_type_k, type_v, n_seq_max, min(n_ubatch, n_batch), kv_unified)
        target = devices[on_gpu[i]] if i in on_gpu else host
        target.weights += shape.layer_bytes[i]
        target.kv += kv
    if ngl > shape.n_layer and devices:
        devices[-1].weights += shape.output_bytes
    else:
        host.weights += shape.output_bytes
    graph = _compute(shape, min(n_ubatch, n_batch), cells, flash_attn)
    if devices and ngl:
        for d in devices:
            d.compute = graph
        host.compute = 4 * min(n_ubatch, n_batch) * shape.n_embd * 4  # inputs and copies kept on the host
    else:
        host.compute = graph
    total_share = sum(shares) or 1.0
    return _with_projector(MemoryEstimate.of(shape.n_layer, ngl, n_ctx, devices, host, False,
                                             [s / total_share for s in shares] if devices else []), mmproj)


def _with_projector(est: MemoryEstimate, mmproj: str | os.PathLike | None) -> MemoryEstimate:
    """``est`` plus a projector's weights and compute buffer (on the first GPU device when
    layers are offloaded, else the host)."""
    if mmproj is None:
        return est
    from ..mtmd.estimate import projector_memory

    proj = projector_memory(mmproj)
    target = est.devices[0] if est.devices and est.n_gpu_layers else est.host
    target.weights += proj.weights
    target.compute += proj.compute
    return MemoryEstimate.of(est.layers, est.n_gpu_layers, est.n_ctx, est.devices, est.host, est.exact,
                             est.tensor_split)


def _exact(model_path: str | os.PathLike, n_ctx: int | None, n_batch: int, n_ubatch: int, n_gpu_layers: int,
           type_k: str, type_v: str, n_seq_max: int, flash_attn: bool, kv_unified: bool) -> MemoryEstimate:
    from ..model import _devices, check_model_file

    p = check_model_file(model_path)
    mparams = lib.llama_model_default_params()
    mparams.no_alloc = True
    mparams.load_mode = lib.LLAMA_LOAD_MODE_NONE
    mparams.n_gpu_layers = n_gpu_layers
    devices = None
    if rpc.registered_servers():  # name the devices, leaving out servers that went away
        devices = _devices(rpc.live_offload_devices())
        mparams.devices = devices
    model = lib.llama_model_load_from_file(os.fsencode(p), mparams)
    if model == ffi.NULL:
        raise EstimateError(f"llama.cpp could not read {p.name}")
    try:
        cparams = lib.llama_context_default_params()
        cparams.n_ctx = n_ctx or 0
        cparams.n_batch, cparams.n_ubatch, cparams.n_seq_max = n_batch, n_ubatch, n_seq_max
        cparams.type_k = getattr(lib, "GGML_TYPE_" + type_k.upper())
        cparams.type_v = getattr(lib, "GGML_TYPE_" + type_v.upper())
        cparams.flash_attn_type = lib.LLAMA_FLASH_ATTN_TYPE_ENABLED if flash_attn else \
            lib.LLAMA_FLASH_ATTN_TYPE_DISABLED
        cparams.kv_unified = kv_unified
        cparams.swa_full = False  # as llama.cpp's own programs and llamapy's Context
        ctx = lib.llama_init_from_model(model, cparams)
        if ctx == ffi.NULL:
            raise EstimateError("llama.cpp could not size a context with these settings")
        try:
            out = ffi.new("struct llamapy_buffer_usage[64]")
            n = min(lib.llamapy_memory_breakdown(ctx, out, 64), 64)
            devices: dict[str, DeviceMemory] = {}
            host = DeviceMemory("host")
            for i in range(n):
                u = out[i]
                target = host if u.is_host else devices.setdefault(ffi.string(u.device).decode(),
                                                                   DeviceMemory(ffi.string(u.device).decode()))
                target.weights += u.model
                target.kv += u.context
                target.compute += u.compute
            return MemoryEstimate.of(lib.llama_model_n_layer(model), n_gpu_layers, lib.llama_n_ctx(ctx),
                                     list(devices.values()), host, True)
        finally:
            lib.llama_free(ctx)
    finally:
        lib.llama_model_free(model)


@dataclass
class GpuLayersEstimate(MemoryEstimate):
    """The recommended offload (``n_gpu_layers``), what it costs (the estimate's fields), the
    largest context that then fits, and the estimates one layer either side."""

    max_ctx: int = 0
    budget: list[int] = field(default_factory=list)  # usable bytes per device after the margin
    neighbours: list[MemoryEstimate] = field(default_factory=list)

    @property
    def estimate(self) -> MemoryEstimate:
        """The recommended configuration as a plain MemoryEstimate."""
        return MemoryEstimate(**{f.name: getattr(self, f.name) for f in dataclasses.fields(MemoryEstimate)})


def estimate_gpu_layers(
    model_path: str | os.PathLike,
    available_vram_mb: float | Sequence[float] | None = None,
    n_ctx: int | None = 2048,
    n_batch: int = 512,
    *,
    margin: float = 0.05,
    host_memory_mb: float | None = None,
    **settings: Any,
) -> GpuLayersEstimate:
    """The largest n_gpu_layers whose weights, KV cache and compute buffers fit in each
    device's budget (less ``margin``), and the largest context that then fits.

    ``available_vram_mb``: one number per GPU (a single number means one GPU); None uses
    the free memory of the GPUs ggml sees (registered RPC servers included). Raises
    EstimateError when even 0 layers do not fit in host memory.
    """
    if available_vram_mb is None:
        from ..system import backends

        # RPC servers' devices first, as llama.cpp places them, with the memory each server reports
        gpus = sorted((d for d in backends() if d.type in ("gpu", "igpu")), key=lambda d: d.endpoint is None)
        budgets_mb = [d.memory_free / MiB for d in gpus]
        names = [f"{d.name} ({d.endpoint})" if d.endpoint else d.name for d in gpus]
    else:
        budgets_mb = [float(available_vram_mb)] if isinstance(available_vram_mb, (int, float)) else \
            [float(x) for x in available_vram_mb]
        names = [f"GPU{i}" for i in range(len(budgets_mb))]
    if any(b < 0 for b in budgets_mb):
        raise EstimateError("available VRAM cannot be negative")
    budget = [int(b * MiB * (1 - margin)) for b in budgets_mb]
    shape = read_shape(model_path)
    n_ctx = n_ctx or shape.n_ctx_train or 4096
    split = settings.pop("tensor_split", None) or (budgets_mb if sum(budgets_mb) > 0 else None)

    def at(ngl: int, ctx: int) -> MemoryEstimate:
        return estimate_memory_usage(shape, ctx, n_batch, n_gpu_layers=ngl, gpu_names=names or None,
                                     tensor_split=split if names else None, **settings)

    def fits(e: MemoryEstimate) -> bool:
        return all(d.total <= b for d, b in zip(e.devices, budget))

    best = 0
    if names and sum(budget) > 0:
        for ngl in range(shape.n_layer + 1, -1, -1):
            if fits(at(ngl, n_ctx)):
                best = ngl
                break
    chosen = at(best, n_ctx)
    host_budget = host_memory_mb * MiB if host_memory_mb is not None else _host_free()
    if chosen.host.total > host_budget:
        raise EstimateError(f"even with {best} GPU layers the host needs {chosen.host.total / MiB:.0f} MiB but has "
                            f"{host_budget / MiB:.0f} MiB: use a smaller model, context or KV cache type")
    lo, hi = 1, max(shape.n_ctx_train, n_ctx)
    while lo < hi:  # the largest context that fits on the devices and the host
        mid = (lo + hi + 1) // 2
        e = at(best, mid)
        if fits(e) and e.host.total <= host_budget:
            lo = mid
        else:
            hi = mid - 1
    neighbours = [at(n, n_ctx) for n in (best - 1, best + 1) if names and 0 <= n <= shape.n_layer + 1]
    return GpuLayersEstimate(**vars(chosen), max_ctx=lo, budget=budget, neighbours=neighbours)


def _host_free() -> int:
    from ..system import backends

    cpu = [d for d in backends() if d.type == "cpu"]
    return cpu[0].memory_free if cpu else 1 << 62


__all__ = ["estimate_memory_usage", "estimate_gpu_layers", "MemoryEstimate", "DeviceMemory", "GpuLayersEstimate",
           "EstimateError", "read_shape", "kv_cells", "SwaLayout", "SWA_LAYOUTS", "NO_KV_CACHE"]
