"""The ASGI app: OpenAI's routes (and llama-server's /health, /metrics, /tokenize, /detokenize)
over one Engine. Every failure is answered with OpenAI's error JSON."""
from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import secrets
import threading
import time
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable, TypeVar

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException

from ..agent.chat import add_stats, call_delta
from ..errors import LlamaError
from ..integrations import openai_protocol as proto
from ..integrations.openai_protocol import RequestError
from .engine import Engine, NotReady, Overloaded, Submission
from .schemas import (ChatCompletion, ChatCompletionRequest, Completion, CompletionRequest, DetokenizeRequest,
                      DetokenizeResponse, EmbeddingList, EmbeddingRequest, ErrorResponse, Health, ModelList,
                      RerankList, RerankRequest, TokenizeRequest, TokenizeResponse)
from .settings import ServerSettings

log = logging.getLogger("llamapy.server")
T = TypeVar("T")
ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorResponse} for code in (400, 401, 413, 503)}
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
               404: "not_found_error", 405: "invalid_request_error", 413: "invalid_request_error",
               503: "server_error"}


def error_response(status: int, message: str, param: str | None = None, code: str | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"error": {"message": message, "type": ERROR_TYPES.get(status, "server_error"), "param": param,
                      "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


class RequestTooLarge(HTTPException):
    def __init__(self, limit: int):
        super().__init__(413, f"the request body is larger than this server's limit of {limit} bytes")


class _Guard:
    """ASGI middleware: refuses bodies over the size limit, counts responses by route and status."""

    def __init__(self, app: Any, settings: ServerSettings, engine: Engine, routes: set[str]):
        self.app, self.limit, self.metrics, self.routes = app, settings.max_request_bytes, engine.metrics, routes

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        status = [500]
        seen = [0]
        length = dict(scope.get("headers") or ()).get(b"content-length", b"0")

        async def counted_receive() -> dict:
            message = await receive()
            seen[0] += len(message.get("body", b""))
            if seen[0] > self.limit:
                raise RequestTooLarge(self.limit)
            return message

        async def noted_send(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            if length.isdigit() and int(length) > self.limit:
                await error_response(413, str(RequestTooLarge(self.limit).detail))(scope, receive, noted_send)
            else:
                await self.app(scope, counted_receive, noted_send)
        finally:
            route = scope["path"] if scope["path"] in self.routes else "other"
            self.metrics.http_response(route, status[0])


def _sse(obj: Any) -> str:
    return f"data: {json.dumps(obj, separators=(',', ':'), ensure_ascii=False)}\n\n"


class _ClientGone(Exception):
    """The client closed its connection before the answer was ready."""


def _chat_prompt_with_media(engine: Engine, messages: list[dict[str, Any]]) -> tuple[str, list[Any]]:
    """The prompt of a conversation and the images/audio of its content parts, in order."""
    from ..mtmd.media import flatten_messages, has_media

    if not has_media(messages):
        return proto.chat_prompt(engine.template, messages), []
    gen = engine.require_ready()
    if gen.mtmd is None:
        raise RequestError("this server takes text only: start it with --mmproj FILE for image parts", "messages")
    flat, media = flatten_messages(messages, gen.mtmd.marker)
    for part in media:  # a client must not make the server read its files: data: URLs only
        url = part.get("image_url")
        url = url.get("url") if isinstance(url, dict) else url
        if part.get("type") != "input_audio" and not (isinstance(url, str) and url.startswith("data:")):
            raise RequestError("images must be sent as data: URLs (data:image/png;base64,...)", "messages")
    return proto.chat_prompt(engine.template, flat), media


async def _race_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Await ``work`` unless the client disconnects first (then raise _ClientGone)."""

    async def gone() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    task = asyncio.ensure_future(work)
    watch = asyncio.ensure_future(gone())
    try:
        await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
    if not task.done():
        task.cancel()
        raise _ClientGone()
    return task.result()


def create_app(settings: ServerSettings, engine: Engine | None = None,
               on_load_error: Callable[[BaseException], None] | None = None) -> FastAPI:
    """The app for ``settings``; the model loads in the background once the app starts."""
    engine = engine or Engine(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        def load() -> None:
            try:
                engine.load()
            except BaseException as e:
                if on_load_error is not None:
                    on_load_error(e)

        loader = threading.Thread(target=load, name="llamapy-load", daemon=True)
        loader.start()
        try:
            yield
        finally:
            await asyncio.to_thread(loader.join)
            await asyncio.to_thread(engine.close)

    app = FastAPI(title="llamapy", summary="An OpenAI-compatible server on llama.cpp's continuous batching",
                  lifespan=lifespan)
    app.state.engine = engine
    _error_handlers(app)

    def check_key(request: Request) -> None:
        if settings.api_key is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(token.strip().encode(), settings.api_key.encode()):
            raise HTTPException(401, "invalid or missing API key (send it as 'Authorization: Bearer KEY')")

    open_routes = APIRouter()
    routes = APIRouter(dependencies=[Depends(check_key)], responses=ERRORS)

    @open_routes.get("/health", response_model=Health, responses={503: {"model": Health}})
    async def health() -> Response:
        """200 once the model is loaded, 503 while it loads (or if it failed to)."""
        if engine.ready:
            return JSONResponse({"status": "ok"})
        body = {"status": "error", "message": engine.error} if engine.error else {"status": "loading"}
        return JSONResponse(body, status_code=503)

    @routes.get("/v1/models", response_model=ModelList)
    @routes.get("/models", response_model=ModelList, include_in_schema=False)
    async def models() -> dict:
        return {"object": "list", "data": [{"id": settings.model_name, "object": "model", "created": engine.created,
                                            "owned_by": "llamapy"}]}

    @routes.get("/metrics", response_class=PlainTextResponse)
    async def metrics() -> PlainTextResponse:
        """Prometheus text: requests, tokens, queue depth, slot use, tokens/s."""
        return PlainTextResponse(engine.metrics.render(engine.gauges()),
                                 media_type="text/plain; version=0.0.4; charset=utf-8")

    @routes.post("/tokenize", response_model=TokenizeResponse)
    async def tokenize(body: TokenizeRequest) -> dict:
        vocab = engine.vocab
        tokens = vocab.tokenize(body.content, body.add_special, body.parse_special)
        if body.with_pieces:
            return {"tokens": [{"id": t, "piece": vocab.token_to_piece(t)} for t in tokens]}
        return {"tokens": tokens}

    @routes.post("/detokenize", response_model=DetokenizeResponse)
    async def detokenize(body: DetokenizeRequest) -> dict:
        return {"content": engine.vocab.detokenize(body.tokens, unparse_special=True)}  # as llama-server does

    def limits() -> dict[str, Any]:
        return {"n_vocab": engine.vocab.n_tokens, "max_tokens_limit": settings.max_tokens_limit,
                "max_tokens_cap": engine.n_ctx_seq}

    @routes.post("/v1/chat/completions", response_model=ChatCompletion,
                 responses={200: {"content": {"text/event-stream": {}}}})
    @routes.post("/chat/completions", response_model=ChatCompletion, include_in_schema=False)
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
        req = body.model_dump(exclude_none=True, by_alias=True)
        proto.check_single_choice(req)
        engine.require_ready()  # 503 while loading, before any work
        cfg = proto.generation_config(req, settings.defaults, chat=True, **limits())
        tools, media = None, []
        if req.get("tools") and req.get("tool_choice") != "none":
            from ..mtmd.media import has_media

            if has_media(req["messages"]):
                raise RequestError("images cannot be combined with tools in one request yet", "tools")
            tools = proto.tool_job(engine.template, req["messages"], req["tools"], req.get("tool_choice", "auto"),
                                   req.get("parallel_tool_calls", True))
            if tools.settings.get("grammar") and cfg.json_schema is not None:
                raise RequestError("response_format cannot be combined with a forced tool call", "response_format")
            prompt, cfg = tools.prompt, cfg.replace(**tools.settings)
        else:
            prompt, media = _chat_prompt_with_media(engine, req["messages"])
        sub = engine.submit([(prompt, cfg, media)] if media else [(prompt, cfg)])
        rid, created, model = proto.new_id("chatcmpl"), int(time.time()), settings.model_name
        try:
            first = await _race_disconnect(request, sub.next())
            if first[1].error is not None:
                raise first[1].error
            if body.stream:
                usage = bool(body.stream_options and body.stream_options.include_usage)
                parser = tools.parser() if tools is not None else None
                review = (lambda text, reply: _review(engine, tools, cfg, text, reply)) \
                    if tools is not None and tools.review is not None else None
                return StreamingResponse(_chat_stream(sub, first, rid, model, created, usage, cfg.logprobs is not None,
                                                      parser, review), media_type="text/event-stream",
                                         headers={"Cache-Control": "no-cache"})
            text, stats = await _race_disconnect(request, _collect_one(sub, first))
            if tools is not None and tools.review is not None:
                reply = tools.parse(text)
                _, extra = await _race_disconnect(request, _review(engine, tools, cfg, text, reply))
                add_stats(stats, extra)
                message = reply.to_dict()
            else:
                message = tools.message(text) if tools is not None else {"role": "assistant", "content": text}
        except BaseException:
            sub.cancel()
            raise
        finish = "tool_calls" if message.get("tool_calls") else None
        return JSONResponse(proto.chat_completion(rid, model, message, stats, cfg.logprobs is not None, created,
                                                  finish))

    @routes.post("/v1/completions", response_model=Completion,
                 responses={200: {"content": {"text/event-stream": {}}}})
    @routes.post("/completions", response_model=Completion, include_in_schema=False)
    async def completions(body: CompletionRequest, request: Request) -> Response:
        req = body.model_dump(exclude_none=True, by_alias=True)
        proto.check_single_choice(req)
        if body.suffix:
            raise RequestError("suffix (fill-in-the-middle) is not supported", "suffix")
        engine.require_ready()
        prompts = proto.completion_prompts(req["prompt"])
        if len(prompts) > settings.n_parallel + settings.max_queue:
            raise RequestError(f"at most {settings.n_parallel + settings.max_queue} prompts per request", "prompt")
        cfg = proto.generation_config(req, settings.defaults, chat=False, **limits())
        sub = engine.submit([(p, cfg) for p in prompts])
        rid, created, model = proto.new_id("cmpl"), int(time.time()), settings.model_name
        logprobs = cfg.logprobs is not None
        try:
            first = await _race_disconnect(request, sub.next())
            if first[1].error is not None:
                raise first[1].error
            if body.stream:
                usage = bool(body.stream_options and body.stream_options.include_usage)
                echo = prompts if body.echo else None
                return StreamingResponse(_completion_stream(sub, first, rid, model, created, usage, logprobs, echo),
                                         media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
            results = await _race_disconnect(request, _collect_all(sub, first))
        except BaseException:
            sub.cancel()
            raise
        choices, stats_list = [], []
        for i, prompt in enumerate(prompts):
            text, stats, error = results[i]
            if error is not None:
                raise error
            head = prompt if body.echo else ""
            choices.append(proto.completion_choice(i, head + text, stats, logprobs, len(head)))
            stats_list.append(stats)
        return JSONResponse(proto.completion(rid, model, choices, stats_list, created))

    @routes.post("/v1/embeddings", response_model=EmbeddingList)
    @routes.post("/embeddings", response_model=EmbeddingList, include_in_schema=False)
    async def embeddings(body: EmbeddingRequest) -> dict:
        from ..embed import Embedder

        embedder = engine.embedding_model()
        if not isinstance(embedder, Embedder):
            raise RequestError("the loaded model is a reranker: use /v1/rerank", "model")
        texts = [body.input] if isinstance(body.input, str) else body.input
        if not texts:
            raise RequestError("input must hold at least one text", "input")
        if body.dimensions is not None and body.dimensions != embedder.n_embd:
            raise RequestError(f"this model gives {embedder.n_embd} dimensions", "dimensions")
        result = await asyncio.to_thread(embedder.embed_with_info, texts)
        data = [{"object": "embedding", "index": i,
                 "embedding": base64.b64encode(v.astype("<f4").tobytes()).decode()
                 if body.encoding_format == "base64" else v.tolist()} for i, v in enumerate(result.vectors)]
        n = int(result.n_tokens.sum())
        return {"object": "list", "data": data, "model": Path(str(settings.embedding_model)).name,
                "usage": {"prompt_tokens": n, "total_tokens": n}}

    @routes.post("/v1/rerank", response_model=RerankList)
    @routes.post("/rerank", response_model=RerankList, include_in_schema=False)
    async def rerank(body: RerankRequest) -> dict:
        from ..embed import Reranker

        reranker = engine.embedding_model()
        if not isinstance(reranker, Reranker):
            raise RequestError("the loaded embedding model has no ranking head: /v1/rerank needs a reranker", "model")
        ranked = await asyncio.to_thread(reranker.rerank, body.query, body.documents, body.top_n)
        results = [{"index": r.index, "relevance_score": r.score,
                    **({"document": {"text": r.document}} if body.return_documents else {})} for r in ranked]
        return {"object": "list", "results": results, "model": Path(str(settings.embedding_model)).name}

    app.include_router(open_routes)
    app.include_router(routes)
    known = {r.path for router in (open_routes, routes) for r in router.routes if hasattr(r, "path")}
    app.add_middleware(_Guard, settings=settings, engine=engine, routes=known)
    return app


async def _collect_one(sub: Submission, first: tuple[int, Any]) -> tuple[str, Any]:
    text, stats, error = (await _collect_all(sub, first))[0]
    if error is not None:
        raise error
    return text, stats


async def _collect_all(sub: Submission, first: tuple[int, Any]) -> dict[int, tuple[str, Any, Any]]:
    parts: dict[int, list[str]] = {}
    done: dict[int, tuple[str, Any, Any]] = {}
    index, event = first
    while True:
        parts.setdefault(index, []).append(event.text)
        if event.done:
            done[index] = ("".join(parts[index]), event.stats, event.error)
        if sub.finished:
            return done
        index, event = await sub.next()


def _drain(sub: Submission, first: tuple[int, Any]) -> list[tuple[int, Any]]:
    """The event given and every one already waiting (sent together: fewer writes under load)."""
    events = [first]
    while True:
        try:
            item = sub.queue.get_nowait()
        except asyncio.QueueEmpty:
            break
        if item[1].done:
            sub.open.discard(item[0])
        events.append(item)
    return events


async def _review(engine: Engine, tools: proto.ToolJob, cfg: Any, text: str, reply: Any) -> tuple[str, Any]:
    """Check an "auto" reply in place (llamapy.agent.call_check): the content it adds, and the
    statistics of the follow-up generation (None when there was none)."""
    follow_up = proto.review_follow_up(tools, cfg, text, reply)
    if follow_up is None:
        return proto.apply_review(tools, reply, None), None
    sub = engine.submit([follow_up])
    try:
        out, stats = await _collect_one(sub, await sub.next())
    finally:
        sub.cancel()
    return proto.apply_review(tools, reply, follow_up, out), stats


async def _chat_stream(sub: Submission, first: tuple[int, Any], rid: str, model: str, created: int,
                       include_usage: bool, logprobs: bool, parser: Any = None,
                       review: Callable[[str, Any], Awaitable[tuple[str, Any]]] | None = None
                       ) -> AsyncIterator[str]:
    """SSE chunks of one chat completion; with a tool parser, its deltas (content, tool_calls).
    With ``review``, calls wait for the end of the reply and are sent if the review keeps them."""
    try:
        yield _sse(proto.chat_chunk(rid, model, created, {"role": "assistant", "content": ""}))
        item = first
        while True:
            out = []
            for _, event in _drain(sub, item):
                for i, delta in enumerate(proto.chat_deltas(parser, event.text, event.done)):
                    if review is not None and "tool_calls" in delta:
                        continue  # the calls are in parser.message: reviewed below
                    out.append(_sse(proto.chat_chunk(rid, model, created, delta,
                                                     logprobs=event.logprobs if logprobs and i == 0 else None)))
                if event.done and event.error is None and review is not None:
                    more, extra = await review(parser.text, parser.message)
                    if more:
                        out.append(_sse(proto.chat_chunk(rid, model, created, {"content": more})))
                    for index, call in enumerate(parser.message.tool_calls):
                        out.append(_sse(proto.chat_chunk(rid, model, created, call_delta(index, call))))
                    add_stats(event.stats, extra)
                if event.done:
                    if event.error is not None:
                        out.append(_sse(_error_body(event.error)))
                    else:
                        calls = parser is not None and parser.message.tool_calls
                        finish = "tool_calls" if calls else proto.finish_reason(event.stats)
                        out.append(_sse(proto.chat_chunk(rid, model, created, {}, finish)))
                        if include_usage:
                            out.append(_sse(proto.usage_chunk(rid, model, created, [event.stats])))
                    out.append("data: [DONE]\n\n")
            yield "".join(out)
            if sub.finished:
                return
            item = await sub.next()
    finally:
        sub.cancel()


async def _completion_stream(sub: Submission, first: tuple[int, Any], rid: str, model: str, created: int,
                             include_usage: bool, logprobs: bool, echo: list[str] | None) -> AsyncIterator[str]:
    kind = "text_completion"
    stats_list = []

    def chunk(index: int, text: str, event: Any, finish: bool) -> str:
        choice = proto.completion_choice(index, text, event.stats if finish else None, False, finish=finish)
        if logprobs and event.logprobs:
            choice["logprobs"] = proto.completion_logprobs(event.logprobs)
        return _sse({"id": rid, "object": kind, "created": created, "model": model, "choices": [choice],
                     "system_fingerprint": None})

    try:
        if echo:
            yield "".join(_sse({"id": rid, "object": kind, "created": created, "model": model, "choices": [
                proto.completion_choice(i, p, None, False, finish=False)], "system_fingerprint": None})
                for i, p in enumerate(echo))
        item = first
        while True:
            out = []
            for index, event in _drain(sub, item):
                if event.text:
                    out.append(chunk(index, event.text, event, False))
                if event.done:
                    if event.error is not None:
                        out.append(_sse(_error_body(event.error)))
                    else:
                        stats_list.append(event.stats)
                        out.append(chunk(index, "", event, True))
            if sub.finished:
                if include_usage:
                    out.append(_sse(proto.usage_chunk(rid, model, created, stats_list, kind)))
                out.append("data: [DONE]\n\n")
            yield "".join(out)
            if sub.finished:
                return
            item = await sub.next()
    finally:
        sub.cancel()


def _error_body(error: BaseException) -> dict:
    return {"error": {"message": str(error), "type": "invalid_request_error", "param": getattr(error, "param", None),
                      "code": None}}


def _error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {}
        loc = [str(p) for p in first.get("loc", ()) if p != "body"]
        where = ".".join(loc)
        message = f"{where}: {first.get('msg', 'invalid request')}" if where else first.get("msg", "invalid request")
        if len(errors) > 1:
            message += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
        return error_response(400, message, where or None)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return error_response(exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestError)
    async def bad_request(request: Request, exc: RequestError) -> JSONResponse:
        return error_response(400, str(exc), exc.param, exc.code)

    @app.exception_handler(Overloaded)
    async def overloaded(request: Request, exc: Overloaded) -> JSONResponse:
        return error_response(503, f"the server is busy: {exc}; retry later", code="overloaded",
                              headers={"Retry-After": str(exc.retry_after)})

    @app.exception_handler(NotReady)
    async def not_ready(request: Request, exc: NotReady) -> JSONResponse:
        return error_response(503, f"the model is not ready: {exc}", code="loading", headers={"Retry-After": "1"})

    @app.exception_handler(_ClientGone)
    async def client_gone(request: Request, exc: _ClientGone) -> Response:
        return Response(status_code=499)  # nobody reads it; the requests were cancelled

    @app.exception_handler(LlamaError)
    async def llama_error(request: Request, exc: LlamaError) -> JSONResponse:
        # what reaches here is about the request (a grammar that does not parse, a prompt too long, ...)
        return error_response(400, str(exc), getattr(exc, "param", None))

    @app.exception_handler(ValueError)
    async def value_error(request: Request, exc: ValueError) -> JSONResponse:
        return error_response(400, str(exc))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s", request.url.path)
        return error_response(500, f"internal error: {type(exc).__name__}: {exc}")
