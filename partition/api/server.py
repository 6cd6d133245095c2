"""The OpenAI-compatible HTTP endpoint over a deployment (serve --http HOST:PORT).

    GET  /v1/models             the served model (and /v1/models/{model}: that one alone)
    POST /v1/chat/completions   messages -> the assistant's answer (stream: server-sent events)
    POST /v1/completions        prompt -> its continuation
    POST /tokenize, /detokenize a prompt's token ids as counted here, and ids back to text (vLLM's)
    GET  /metrics               requests, tokens, TTFT, TPOT, every link's and stage's time (Prometheus)
    GET  /health                whether it can answer now (every worker probed), with the plan it serves

HEAD answers as GET does, without the body (load balancers probe /health so). A request body comes with
Content-Length or `Transfer-Encoding: chunked`. Whatever cannot be answered, a malformed request line
included, is answered in OpenAI's error shape.

Any OpenAI client works against http://HOST:PORT/v1. Each request is one session through the split
(partition.coordinator.answer), one per choice when it asks for `n` (api/choices.py); requests beyond
the workers' session slots wait their turn. A bad
request gets a 400 in OpenAI's error shape naming the field, a worker that went away a 503 naming the
device, and the endpoint keeps serving. A client that disconnects before its answer is whole ends
its request: its socket is looked at for the end of its stream while the request waits for a slot
and for each step, so a hang-up during a long prefill is seen within 0.2 s, not at the first token.
On `shutdown` + `drain` the requests under way finish before the deployment closes.

The standard library's threading HTTP server is enough here: one thread per connection, and every
thread spends its time waiting on the pipeline, not on HTTP (benchmarks/http_api.py: a streaming
client gets its tokens at the direct TPOT within 1 %).
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import select
import socket
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc

from partition.api.choices import answer_choices
from partition.api.chunked import read_chunked
from partition.api.cors import CorsPolicy
from partition.api.replies import ReplyIds, model, models
from partition.api.requests import CHAT, COMPLETION, ApiError, Served, check_model, parse_body, text_request
from partition.api.serving_stats import ServingStats
from partition.api.tokenize import detokenize, tokenize
from partition.coordinator.answer import Answerer
from partition.coordinator.deploy import DeployError
from partition.coordinator.health import HealthChecks
from partition.errors import ContextOverflowError, PartitionError, StoppedError
from partition.metrics import json_out
from partition.model.generation import TokenLogprob
from partition.transport.client import StageCallError
from partition.types import RETURN_TOP_K

log = logging.getLogger(__name__)

DRAIN_TIMEOUT_S = 60.0  # seconds requests under way may take to finish when the endpoint stops
MAX_BODY_BYTES = 8 << 20  # a request body; a full context of text is a few hundred KB at most
# After refusing a body it did not read, the connection reads and drops what the client still sends, for
# at most this long and this much, before it closes: closing with bytes unread resets the connection,
# and a client still sending its body would see the reset instead of the refusal.
LINGER_S = 2.0
LINGER_BYTES = 64 << 20
ROUTES = {"/v1/chat/completions": CHAT, "/v1/completions": COMPLETION}
TOKEN_ROUTES = {"/tokenize": tokenize, "/detokenize": detokenize}  # vLLM's, at the root as vLLM has them
GET_PATHS = ("/health", "/metrics", "/v1/models")  # and /v1/models/MODEL
ALLOWED = ("GET", "HEAD", "POST")  # the methods served, as a 405's Allow header lists them
# a worker's status -> the HTTP status the client sees (the worker's message goes along)
STAGE_STATUS = {
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}  # anything else a worker says is the pipeline's failure, not the request's: 502


def route_path(target: str) -> str:
    """The path a request line names, without its query. HTTP/1.1 servers take the absolute form too
    (`GET http://host/health HTTP/1.1`, as some proxies send it), so its scheme and host are dropped."""
    parts = urllib.parse.urlsplit(target)
    if parts.scheme and parts.netloc:
        return parts.path or "/"
    return target.split("?", 1)[0]


class ClientGone(Exception):
    """The client closed its connection before its answer was complete."""


class ApiServer(ThreadingHTTPServer):
    daemon_threads = True  # a stuck client must not keep the process alive at shutdown
    allow_reuse_address = True
    # Connections the kernel holds until the accept loop takes them. The standard library's 5 drops the
    # rest of a burst, and each dropped client connects again only after a second: 3 to 11 of 40
    # clients connecting at once took 1.02 s to connect; with 128, one of 200 in a row did.
    request_queue_size = 128

    def __init__(
        self,
        host: str,
        port: int,
        token: str | None = None,
        allowed_origins: tuple[str, ...] = (),
        model_names: tuple[str, ...] = (),
    ) -> None:
        """Listen at once (a taken port fails before anything is deployed); `attach` before serving.
        `allowed_origins`: the web origins whose pages may call it (partition/api/cors.py).
        `model_names`: the names requests give the model and replies use (the first), in place of the
        plan's (vLLM's --served-model-name)."""
        self.model_names = model_names
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        super().__init__((host, port), _Handler)
        self.token = token
        self.cors = CorsPolicy(allowed_origins)
        self.answerer: Answerer | None = None
        self.served: Served | None = None
        self.stats: ServingStats | None = None
        self.health: HealthChecks | None = None
        self.noted_logits = False  # the log said once what sampling without top_k costs
        self.started = int(time.time())
        self._answering = threading.Condition()
        self._under_way = 0  # requests between their check and the end of their answer

    def attach(self, answerer: Answerer) -> None:
        """Answer requests through `answerer`'s deployment."""
        d = answerer.deployment
        self.answerer = answerer
        names = self.model_names or (d.plan.model.name,)
        self.served = Served(
            names[0],
            answerer.tokenizer,
            d.source.spec.vocab_size,
            d.max_context,
            d.source.spec.max_context,
            names[1:],
        )
        self.stats = ServingStats(answerer)
        self.health = HealthChecks(answerer)

    def handle_error(self, request, client_address) -> None:
        """A client that reset or dropped its connection is no fault of the server: one line, not the
        standard library's traceback on stderr; anything else is logged with its traceback."""
        error = sys.exc_info()[1]
        if isinstance(error, ConnectionError):
            log.debug("client %s dropped its connection: %s", client_address[0], error)
            return
        log.exception("error while serving %s", client_address[0])

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://[{host}]:{port}/v1" if ":" in host else f"http://{host}:{port}/v1"

    def serve_in_thread(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, name="http-api", daemon=True)
        thread.start()
        return thread

    def drain(self, timeout_s: float = DRAIN_TIMEOUT_S) -> bool:
        """After `shutdown`: take no new connections and wait for the requests under way (waiting for a
        slot, generating, or sending their last bytes) to be answered. True when none is left, False
        when `timeout_s` ran out first."""
        self.server_close()
        with self._answering:
            return self._answering.wait_for(lambda: self._under_way == 0, timeout_s)

    @contextlib.contextmanager
    def under_way(self):
        """Count a request from its check to the last byte of its answer (what `drain` waits for)."""
        with self._answering:
            self._under_way += 1
        try:
            yield
        finally:
            with self._answering:
                self._under_way -= 1
                self._answering.notify_all()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive; streams use chunked transfer encoding
    # seconds a connection may stay silent (an idle keep-alive, a half-sent body) or refuse to take a
    # streamed chunk before its thread gives up on it; a stream's session is closed then
    timeout = 120
    server: ApiServer
    body_refused = False  # a body was refused before it was read whole: linger before closing

    def handle_expect_100(self) -> bool:
        """`Expect: 100-continue`: no 100 for a body over the limit. Its 413 comes instead, before the
        client sends a byte of it (curl waits a second for the 100, then sends anyway)."""
        length = self.headers.get("Content-Length", "")
        if length.isascii() and length.isdigit() and int(length) > MAX_BODY_BYTES:
            return True  # on to do_POST, whose read refuses it unread
        return super().handle_expect_100()

    def finish(self) -> None:
        super().finish()  # the answer is flushed
        if self.body_refused:
            self._linger()

    # -- routes ---------------------------------------------------------------------------------------

    def do_GET(self) -> None:
        path = route_path(self.path)
        self._discard_body()
        try:
            if path == "/health":
                try:
                    health = self.server.health.current()
                except Exception as error:  # a fault of ours: a 500 in the same shape, the endpoint up
                    raise _api_error(error) from None
                said = {**health.report(), "model": self.server.served.model, **self.server.answerer.labels}
                self._send_json(health.http_status, said)
                return
            self._authorize()
            served = self.server.served
            if path == "/v1/models":
                self._send_json(200, models(served.names, self.server.started))
                return
            if path.startswith("/v1/models/"):  # retrieve one model, as OpenAI clients' models.retrieve
                asked = urllib.parse.unquote(path.removeprefix("/v1/models/"))
                check_model({"model": asked}, served)
                self._send_json(200, model(asked, self.server.started))
                return
            if path == "/metrics":
                self._send(
                    200, self.server.stats.render().encode(), "text/plain; version=0.0.4; charset=utf-8"
                )
                return
            if path in ROUTES or path in TOKEN_ROUTES:
                raise ApiError(
                    405,
                    f"{path} takes POST, not {self.command}; send the request as a POST with a JSON body",
                    code="method_not_allowed",
                    headers={"Allow": "POST"},
                )
            raise ApiError(
                404,
                f"no route {self.command} {path}; this endpoint has GET /v1/models, /v1/models/MODEL, "
                "/metrics and /health",
                code="not_found",
            )
        except ApiError as error:
            self._send_error(error)

    def do_POST(self) -> None:
        path = route_path(self.path)
        try:
            # read first: a body left unread would be taken for the next request on this connection
            body = self._read_body()
            self._authorize()
            if path in TOKEN_ROUTES:  # answered at once: no session, nothing to wait for
                self._send_json(200, TOKEN_ROUTES[path](parse_body(body), self.server.served))
                return
            kind = ROUTES.get(path)
            if kind is None and (path in GET_PATHS or path.startswith("/v1/models/")):
                raise ApiError(
                    405,
                    f"{path} takes GET, not POST",
                    code="method_not_allowed",
                    headers={"Allow": "GET, HEAD"},
                )
            if kind is None:
                raise ApiError(
                    404,
                    f"no route POST {path}; this endpoint has POST {', '.join([*ROUTES, *TOKEN_ROUTES])}",
                    code="not_found",
                )
            request = text_request(kind, parse_body(body), self.server.served)
        except Exception as error:  # ApiError, or a fault of ours: a 500 in the same shape, the thread kept
            self._failed(_api_error(error))
            return
        note = self.server.answerer.logits_note(request.generation.sampling, f'"top_k": {RETURN_TOP_K}')
        if note and not self.server.noted_logits:  # once: every such request costs the same
            self.server.noted_logits = True
            log.warning("%s (a request to %s; said once)", note, path)
        with self.server.under_way():
            if request.stream:
                self._stream(request)
            else:
                self._complete(request)

    do_HEAD = do_GET  # _send leaves the body out

    def _not_allowed(self) -> None:
        """Every other method: 405 in OpenAI's error shape (not the stdlib's 501 page), body read first."""
        self._discard_body()
        self._send_error(
            ApiError(
                405,
                f"method {self.command} is not served; this endpoint answers {', '.join(ALLOWED)}",
                code="method_not_allowed",
                headers={"Allow": ", ".join(ALLOWED)},
            )
        )

    do_PUT = do_DELETE = do_PATCH = _not_allowed

    def do_OPTIONS(self) -> None:
        """A browser's preflight from an allowed origin: 204 with what the endpoint takes (no key: a
        preflight carries none). Any other OPTIONS is refused as any other method is."""
        allowed = self.server.cors.preflight(
            self.headers.get("Origin"), self.headers.get("Access-Control-Request-Method")
        )
        if allowed is None:
            self._not_allowed()
            return
        self._discard_body()
        self.send_response(204)
        for name, value in allowed.items():  # end_headers adds the origin's own
            self.send_header(name, value)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def end_headers(self) -> None:
        """Every reply, streams and errors included, names an allowed origin that asked (CORS)."""
        headers = getattr(self, "headers", None)  # None when the request line itself was malformed
        for name, value in self.server.cors.headers(headers.get("Origin") if headers else None).items():
            self.send_header(name, value)
        super().end_headers()

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The standard library's own refusals (a malformed request line or header, a method no do_
        handles) in OpenAI's error shape instead of its HTML page."""
        if code == HTTPStatus.NOT_IMPLEMENTED and self.command:  # its word for a method it has no do_ for
            self._not_allowed()
            return
        said = message or self.responses.get(code, ("the request is malformed",))[0]
        self.log_error("code %d, message %s", code, said)
        # A request line it could not read leaves the version at HTTP/0.9, which gets no status line
        # or headers; any client that can read this answer speaks HTTP/1.x.
        self.request_version = self.protocol_version
        self.close_connection = True  # where the next request starts is unknown
        hint = "send an HTTP/1.1 request, e.g. POST /v1/chat/completions with a JSON body"
        self._send_error(ApiError(code, f"{said}; {hint}"))

    # -- answers --------------------------------------------------------------------------------------

    def _complete(self, request) -> None:
        try:  # a client that hangs up before its answer is whole (or while it waits) ends the request
            answers = answer_choices(self.server.answerer, request.generation, request.n, self._client_check)
        except ClientGone:
            log.info("%s left before its answer was whole; its session is closed", self.address_string())
            self.server.stats.ended("client_gone")
            self.close_connection = True
            return
        except Exception as error:
            self._failed(_api_error(error))
            return
        self.server.stats.answered(answers)
        self._send_json(200, ReplyIds(request, self.server.served.tokenizer).completion(answers))

    def _stream(self, request) -> None:
        ids, events = ReplyIds(request, self.server.served.tokenizer), _EventStream(self)
        # how many choices' first chunks went, and per choice the log-probabilities of the tokens whose
        # text has not gone yet (each list is touched by its choice's thread alone)
        begun, beginning = [0], threading.Lock()
        tokens: list[list[TokenLogprob]] = [[] for _ in range(request.n)]

        def begin(index: int) -> None:
            """A chat choice's first chunk names the role; those of the choices before it go first, so
            indexes first appear in order, as OpenAI's stream accumulator takes them."""
            with beginning:
                for earlier in range(begun[0], index + 1):
                    if request.kind == CHAT:
                        events.send(ids.chunk(first=True, index=earlier))
                begun[0] = max(begun[0], index + 1)

        def on_text(index: int, text: str) -> None:
            begin(index)
            events.send(ids.chunk(text, tokens=tokens[index], index=index))
            tokens[index].clear()

        answers = None
        try:  # a client that hangs up while its request waits (a slot, a step) ends it
            answers = answer_choices(
                self.server.answerer,
                request.generation,
                request.n,
                self._client_check,
                on_text,
                lambda index, entry: tokens[index].append(entry),
            )
            self.server.stats.answered(answers)
            begin(request.n - 1)
            for chunk in ids.last_chunks(answers, tokens):
                events.send(chunk)
            events.done()
        except ClientGone:
            if answers is None:  # it left mid-answer (not while its last chunks went out)
                when = "while its answer streamed" if events.started else "before its first token"
                log.info("%s left %s; its session is closed", self.address_string(), when)
                self.server.stats.ended("client_gone")
            self.close_connection = True
        except Exception as error:
            failure = _api_error(error)
            if not events.started:
                self._failed(failure)
                return
            self.server.stats.ended(str(failure.status))
            # the access log has its 200 (sent with the first text): say what the stream ended with
            log.warning(
                '%s "%s" streamed with 200, then ended with a %d (%s): %s',
                self.address_string(), self.requestline, failure.status, failure.code or failure.kind,
                failure.message,
            )  # fmt: skip
            try:  # the stream has begun with status 200: the error goes as its last event
                events.send(failure.body())
                events.done()
            except ClientGone:
                self.close_connection = True

    # -- HTTP plumbing --------------------------------------------------------------------------------

    def _client_check(self) -> Callable[[], None]:
        """A check that raises ClientGone once the client closed its connection: readable now, and a
        peek reads end-of-stream. (A poll first: with a timeout set, the socket's own recv would wait.)"""
        client = select.poll()  # one per choice (CPython refuses two poll() calls at once on one)
        client.register(self.connection, select.POLLIN)

        def check() -> None:
            if not client.poll(0):
                return  # nothing to read: still there
            try:
                if self.connection.recv(1, socket.MSG_PEEK) == b"":
                    raise ClientGone("the client closed its connection")
            except OSError as error:
                raise ClientGone(str(error)) from None

        return check

    def _authorize(self) -> None:
        token = self.server.token
        if token is None:
            return
        scheme, _, key = self.headers.get("Authorization", "").strip().partition(" ")
        # the scheme is case-insensitive (RFC 9110, 11.1); the key is compared in constant time
        given = key.strip() if scheme.lower() == "bearer" else ""
        if not (given and hmac.compare_digest(given.encode(), token.encode())):
            raise ApiError(
                401,
                "missing or wrong API key: send the header `Authorization: Bearer <key>`",
                code="invalid_api_key",
                headers={"WWW-Authenticate": 'Bearer realm="partition"'},  # the scheme asked for (RFC 6750)
            )

    def _read_body(self, required: bool = True) -> bytes:
        """The request's body, by Content-Length or chunked; b"" when it has none and none is `required`.
        A body that cannot be read leaves the next request's start unknown: the connection closes."""
        length, encoding = self.headers.get("Content-Length"), self.headers.get("Transfer-Encoding")
        compressed = self.headers.get("Content-Encoding", "identity").strip().lower()
        try:
            if compressed != "identity":  # read as it came, it would be refused as JSON it is not
                raise ApiError(
                    415,
                    f"Content-Encoding {compressed!r} is not supported; send the body uncompressed",
                    headers={"Accept-Encoding": "identity"},  # what RFC 9110, 15.5.16 says to send
                )
            # Content-Length headers that disagree: which one frames the body is unknown, and a request
            # may be smuggled in it (RFC 9112, 6.3)
            lengths = {value.strip() for value in self.headers.get_all("Content-Length", [])}
            if len(lengths) > 1:
                raise ApiError(
                    400, f"the request has Content-Length headers that disagree: {', '.join(sorted(lengths))}"
                )
            if encoding is not None:
                if length is not None:  # two framings that may disagree: a request smuggled in the body
                    raise ApiError(400, "send Content-Length or Transfer-Encoding: chunked, not both")
                if encoding.strip().lower() != "chunked":
                    raise ApiError(
                        501,
                        f"Transfer-Encoding {encoding!r} is not supported; send chunked or Content-Length",
                    )
                return read_chunked(self.rfile, MAX_BODY_BYTES)
            if length is None:
                if required:
                    raise ApiError(
                        411, "send the request body with Content-Length or Transfer-Encoding: chunked"
                    )
                return b""
            if not (length.isascii() and length.isdigit()):  # str.isdigit takes "²" as well
                raise ApiError(400, f"Content-Length {length!r} is not a number of bytes")
            size = int(length)
            if size > MAX_BODY_BYTES:
                raise ApiError(413, f"the request body has {size} bytes, over the limit of {MAX_BODY_BYTES}")
            body = self.rfile.read(size)
            if len(body) < size:
                raise ApiError(
                    400,
                    f"the request body ended after {len(body)} of the {size} bytes its Content-Length says",
                )
            return body
        except TimeoutError:  # a client that stopped sending is not a fault of ours
            self.close_connection = self.body_refused = True
            raise ApiError(
                408,
                f"the request body did not come whole within {self.timeout} s of silence; send all of it "
                "(as many bytes as Content-Length says, or the chunked body's last chunk)",
            ) from None
        except ApiError:
            self.close_connection = self.body_refused = True
            raise

    def _linger(self) -> None:
        """Read and drop what the client still sends (its answer is out and the write side closed), until
        it closes too, or LINGER_S or LINGER_BYTES have passed."""
        deadline, dropped = time.monotonic() + LINGER_S, 0
        try:
            self.connection.shutdown(socket.SHUT_WR)
            while dropped < LINGER_BYTES and (left := deadline - time.monotonic()) > 0:
                self.connection.settimeout(left)
                if not (data := self.connection.recv(1 << 16)):
                    return
                dropped += len(data)
        except OSError:  # the client reset or timed out: nothing more to wait for
            pass

    def _discard_body(self) -> None:
        """Read and drop the body of a request no route takes one for, so that it is not taken for the
        next request on the connection."""
        with contextlib.suppress(ApiError):  # the connection closes after the answer
            self._read_body(required=False)

    def _send_json(self, status: int, body: dict) -> None:
        self._send(status, json_out.dumps(body).encode(), "application/json")

    def _send(
        self, status: int, data: bytes, content_type: str, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command == "HEAD":  # the headers GET would send, Content-Length included
            return
        try:
            self.wfile.write(data)
        except OSError as error:  # reset or closed while its reply was written: as handle_error says it
            log.debug("client %s dropped its connection: %s", self.client_address[0], error)
            self.close_connection = True

    def _send_error(self, error: ApiError) -> None:
        self._send(error.status, json_out.dumps(error.body()).encode(), "application/json", error.headers)

    def _failed(self, error: ApiError) -> None:
        """A request that could not be answered: counted, and the client told why."""
        self.server.stats.ended(str(error.status))
        self._send_error(error)

    def log_message(self, format: str, *args) -> None:
        log.info("%s %s", self.address_string(), format % args)


class _EventStream:
    """Server-sent events (`data: {...}`) over chunked transfer encoding (to an HTTP/1.0 client, which
    knows no chunks, as the bytes themselves, the connection closing at the end); the 200 goes out with
    the first event, so a request that fails before any text still gets a proper error status."""

    def __init__(self, handler: _Handler) -> None:
        self.handler = handler
        self.started = False
        self.chunked = handler.request_version != "HTTP/1.0"
        self._writing = threading.Lock()  # a request's choices send their chunks from threads of their own

    def send(self, event: dict | str) -> None:
        data = event if isinstance(event, str) else json_out.dumps(event)
        with self._writing:
            self._write(f"data: {data}\n\n".encode())

    def done(self) -> None:
        self.send("[DONE]")
        with self._writing:
            self._write(b"")  # the last chunk of the transfer

    def _write(self, payload: bytes) -> None:
        h = self.handler
        try:
            if not self.started:
                self.started = True
                h.send_response(200)
                h.send_header("Content-Type", "text/event-stream")
                h.send_header("Cache-Control", "no-cache")
                if self.chunked:
                    h.send_header("Transfer-Encoding", "chunked")
                else:  # the end of the body is the end of the connection
                    h.close_connection = True
                    h.send_header("Connection", "close")
                h.end_headers()
            h.wfile.write(b"%x\r\n%s\r\n" % (len(payload), payload) if self.chunked else payload)
            h.wfile.flush()
        except OSError as error:  # BrokenPipeError, ConnectionResetError: the client went away
            raise ClientGone(str(error)) from None


def _api_error(error: Exception) -> ApiError:
    """What the client is told about a failure while answering (the endpoint itself stays up)."""
    if isinstance(error, ApiError):
        return error
    if isinstance(error, StageCallError):
        return ApiError(STAGE_STATUS.get(error.code, 502), str(error), code=error.code.name.lower())
    if isinstance(error, StoppedError):  # serve was stopped under it (Ctrl-C)
        return ApiError(503, str(error), code="server_stopping")
    if isinstance(error, ContextOverflowError):
        return ApiError(400, str(error), code="context_length_exceeded")
    if isinstance(error, DeployError):  # a worker came back as something the plan does not have there
        return ApiError(502, str(error), code="deploy_mismatch")
    if isinstance(error, PartitionError):
        return ApiError(500, str(error))
    log.exception("answering failed")
    return ApiError(
        500, f"internal error ({type(error).__name__}: {error}); the server's log has the traceback"
    )
