"""The endpoint's HTTP as the clients and proxies in front of it speak it: HEAD probes, chunked request
bodies, and requests too malformed to route, each answered in OpenAI's error shape."""

import http.client
import json
import re
import socket

import pytest

from tests.api.test_http_endpoint import TIMEOUT_S, api, api_server, deployed, request  # noqa: F401 (fixtures)

BODY = {"prompt": "Once upon a time", "max_tokens": 4, "temperature": 0}


def connect(server) -> http.client.HTTPConnection:
    host, port = server.server_address[:2]
    return http.client.HTTPConnection(host, port, timeout=TIMEOUT_S)


def post_raw_body(connection, path: str, headers: dict[str, str], raw: bytes) -> http.client.HTTPResponse:
    """POST `raw` as the body's bytes on the wire, framed only by `headers`."""
    connection.putrequest("POST", path)
    for name, value in headers.items():
        connection.putheader(name, value)
    connection.endheaders()
    connection.send(raw)
    return connection.getresponse()


@pytest.mark.parametrize("path", ["/health", "/v1/models"])
def test_head_answers_as_get_does_without_the_body_and_the_connection_goes_on(api, path):  # noqa: F811
    connection = connect(api)
    try:
        connection.request("GET", path)
        got = connection.getresponse()
        body = got.read()
        connection.request("HEAD", path)
        head = connection.getresponse()
        assert head.status == got.status == 200
        assert head.getheader("Content-Type") == got.getheader("Content-Type") == "application/json"
        assert head.getheader("Content-Length") == str(len(body)) and head.read() == b""
        connection.request("GET", "/health")  # no stray body bytes were left in the way
        again = connection.getresponse()
        assert again.status == 200 and json.loads(again.read())["status"] == "ok"
    finally:
        connection.close()


def test_head_of_a_route_that_is_not_there_is_a_404_without_a_body(api):  # noqa: F811
    connection = connect(api)
    try:
        connection.request("HEAD", "/v1/nothing")
        response = connection.getresponse()
        assert response.status == 404 and response.read() == b""
        assert int(response.getheader("Content-Length")) > 0
    finally:
        connection.close()


def test_a_chunked_body_is_answered_as_the_same_body_with_content_length(api):  # noqa: F811
    status, expected = request(api, "POST", "/v1/completions", BODY)
    assert status == 200, expected
    data = json.dumps(BODY).encode()
    # three chunks, one with an extension, and a trailer: all of it is the body's framing
    raw = b"5;note=x\r\n%s\r\n%x\r\n%s\r\n%x\r\n%s\r\n0\r\nX-Checksum: 0\r\n\r\n" % (
        data[:5],
        len(data[5:20]),
        data[5:20],
        len(data[20:]),
        data[20:],
    )
    connection = connect(api)
    try:
        response = post_raw_body(
            connection,
            "/v1/completions",
            {"Content-Type": "application/json", "Transfer-Encoding": "chunked"},
            raw,
        )
        reply = json.loads(response.read())
        assert response.status == 200, reply
        assert reply["choices"][0]["text"] == expected["choices"][0]["text"]
        connection.request("GET", "/health")  # the body ended where its last chunk said
        again = connection.getresponse()
        assert again.status == 200 and json.loads(again.read())["status"] == "ok"
    finally:
        connection.close()


def test_a_body_from_an_iterable_goes_out_chunked_and_is_answered(api):  # noqa: F811
    data = json.dumps(BODY).encode()
    connection = connect(api)
    try:  # what http.client (and clients that stream their upload) send for a body of unknown length
        connection.request("POST", "/v1/completions", body=iter([data[:7], data[7:]]), encode_chunked=True)
        response = connection.getresponse()
        reply = json.loads(response.read())
        assert response.status == 200, reply
        assert reply["usage"]["completion_tokens"] == 4
    finally:
        connection.close()


@pytest.mark.parametrize(
    ("headers", "raw", "status", "says"),
    [
        ({"Transfer-Encoding": "chunked"}, b"900001\r\n", 413, "over the limit of 8388608 bytes"),
        ({"Transfer-Encoding": "chunked"}, b"zz\r\n{}\r\n0\r\n\r\n", 400, "not a hexadecimal size"),
        ({"Transfer-Encoding": "chunked"}, b"-2\r\n{}\r\n0\r\n\r\n", 400, "not a hexadecimal size"),
        ({"Transfer-Encoding": "chunked"}, b"1\r\n{}\r\n0\r\n\r\n", 400, "longer than its size says"),
        ({"Transfer-Encoding": "chunked", "Content-Length": "7"}, b"0\r\n\r\n", 400, "not both"),
        ({"Transfer-Encoding": "gzip"}, b"", 501, "send chunked or Content-Length"),
        ({"Content-Length": "\u00b2"}, b"{}", 400, "not a number of bytes"),
        ({}, b"", 411, "Content-Length or Transfer-Encoding: chunked"),
    ],
)
def test_a_body_that_cannot_be_read_is_refused_in_openais_shape_and_the_connection_closed(
    api,  # noqa: F811
    headers,
    raw,
    status,
    says,
):
    connection = connect(api)
    try:
        response = post_raw_body(connection, "/v1/completions", headers, raw)
        error = json.loads(response.read())["error"]
        assert response.status == status, error
        assert says in error["message"] and error["type"]
        assert response.getheader("Connection") == "close"  # where a next request would start is unknown
    finally:
        connection.close()


def exchange(server, raw: bytes) -> tuple[bytes, dict[str, str], bytes]:
    """(status line, headers, body) of the answer to `raw` bytes, read until the server closes."""
    host, port = server.server_address[:2]
    with socket.create_connection((host, port), timeout=TIMEOUT_S) as client:
        client.sendall(raw)
        received = b""
        while chunk := client.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines)
    return status.encode(), headers, body


@pytest.mark.parametrize(
    ("raw", "status", "says"),
    [
        (b"GARBAGE\r\n\r\n", 400, "GARBAGE"),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 TLS hello\r\n\r\n", 400, "Bad request"),
        (b"POST /v1/completions HTTP/one\r\n\r\n", 400, "Bad request version"),
        (b"GET /health HTTP/2.0\r\n\r\n", 505, "HTTP"),
    ],
)
def test_a_request_too_malformed_to_route_gets_openais_error_shape_not_an_html_page(
    api,  # noqa: F811
    raw,
    status,
    says,
):
    line, headers, body = exchange(api, raw)
    assert line.startswith(b"HTTP/1.1 %d" % status), line
    assert headers["Content-Type"] == "application/json" and headers["Connection"] == "close"
    assert int(headers["Content-Length"]) == len(body)
    error = json.loads(body)["error"]
    assert says in error["message"] and "POST /v1/chat/completions" in error["message"]
    assert set(error) == {"message", "type", "param", "code"}


def test_content_lengths_that_disagree_are_refused_and_the_bytes_after_them_never_read_as_a_request(
    api,  # noqa: F811
):
    hidden = b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n"  # a request smuggled in the longer body
    raw = (
        b"POST /v1/completions HTTP/1.1\r\nContent-Length: 0\r\nContent-Length: %d\r\n\r\n" % len(hidden)
    ) + hidden
    line, headers, body = exchange(api, raw)
    assert line.startswith(b"HTTP/1.1 400"), line
    assert headers["Connection"] == "close" and int(headers["Content-Length"]) == len(body)
    assert f"Content-Length headers that disagree: 0, {len(hidden)}" in json.loads(body)["error"]["message"]


def test_a_stream_to_an_http_1_0_client_is_its_events_as_they_are_ended_by_closing(api):  # noqa: F811
    """HTTP/1.0 has no chunked transfer encoding: the events go as plain bytes and the end of the
    connection ends them."""
    data = json.dumps({**BODY, "stream": True}).encode()
    raw = b"POST /v1/completions HTTP/1.0\r\nContent-Length: %d\r\n\r\n%s" % (len(data), data)
    line, headers, body = exchange(api, raw)  # returns once the server has closed the connection
    assert line.startswith(b"HTTP/1.1 200"), line
    assert "Transfer-Encoding" not in headers and headers["Connection"] == "close"
    blocks = body.decode().split("\n\n")
    assert all(b.startswith("data: ") for b in blocks[:-1]) and blocks[-1] == "", body
    assert blocks[-2] == "data: [DONE]"
    pieces = [json.loads(b.removeprefix("data: "))["choices"][0]["text"] for b in blocks[:-2]]
    _, whole = request(api, "POST", "/v1/completions", BODY)
    assert "".join(pieces) == whole["choices"][0]["text"]


def test_a_body_over_the_limit_is_answered_413_while_the_client_is_still_sending_it(api):  # noqa: F811
    """The refusal goes out before the body is read; closing with the body's bytes unread would reset the
    connection, and a client still sending would see that reset instead of the 413."""
    connection = connect(api)
    try:
        body = b" " * (9 << 20)  # over MAX_BODY_BYTES, sent whole by the client before it reads
        connection.request("POST", "/v1/completions", body=body, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        error = json.loads(response.read())["error"]
        assert response.status == 413, error
        assert f"the request body has {len(body)} bytes, over the limit of 8388608" in error["message"]
        assert response.getheader("Connection") == "close"
    finally:
        connection.close()


@pytest.mark.parametrize(
    ("headers", "raw"),
    [
        ({"Content-Length": str(len(json.dumps(BODY)) + 10)}, json.dumps(BODY).encode()),
        (
            {"Transfer-Encoding": "chunked"},
            b"%x\r\n%s\r\n" % (len(json.dumps(BODY)), json.dumps(BODY).encode()),
        ),
    ],
)
def test_a_body_that_stops_arriving_is_a_408_not_a_fault_of_ours(api, monkeypatch, headers, raw):  # noqa: F811
    from partition.api import server

    monkeypatch.setattr(server._Handler, "timeout", 1.0)  # seconds of silence; 120 when serving
    connection = connect(api)
    try:
        response = post_raw_body(connection, "/v1/completions", headers, raw)
        error = json.loads(response.read())["error"]
        assert response.status == 408, error
        assert "did not come whole within 1.0 s of silence; send all of it" in error["message"]
        assert error["type"] == "invalid_request_error" and response.getheader("Connection") == "close"
    finally:
        connection.close()
    status, reply = request(api, "POST", "/v1/completions", BODY)  # served as before
    assert status == 200, reply


def test_a_body_cut_short_by_its_client_is_a_400_saying_how_much_came(api):  # noqa: F811
    data = json.dumps(BODY).encode()
    host, port = api.server_address[:2]
    with socket.create_connection((host, port), timeout=TIMEOUT_S) as client:
        client.sendall(
            b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
            % (len(data) + 10, data)
        )
        client.shutdown(socket.SHUT_WR)  # the client is done sending
        received = b""
        while chunk := client.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400"), received
    message = json.loads(body)["error"]["message"]
    assert f"the request body ended after {len(data)} of the {len(data) + 10} bytes" in message


def test_a_compressed_body_is_a_415_saying_to_send_it_uncompressed(api):  # noqa: F811
    import gzip

    for coding, raw in (
        ("gzip", gzip.compress(json.dumps(BODY).encode())),
        ("br", json.dumps(BODY).encode()),
    ):
        connection = connect(api)
        try:
            headers = {"Content-Length": str(len(raw)), "Content-Encoding": coding}
            response = post_raw_body(connection, "/v1/completions", headers, raw)
            error = json.loads(response.read())["error"]
            assert response.status == 415 and response.getheader("Accept-Encoding") == "identity"
            assert f"Content-Encoding {coding!r} is not supported" in error["message"], error
        finally:
            connection.close()
    identity = {"Content-Length": str(len(json.dumps(BODY))), "Content-Encoding": "identity"}
    connection = connect(api)
    try:
        response = post_raw_body(connection, "/v1/completions", identity, json.dumps(BODY).encode())
        assert response.status == 200 and json.loads(response.read())["choices"][0]["text"]
    finally:
        connection.close()


def test_a_burst_of_clients_finds_room_in_the_listen_backlog(api):  # noqa: F811
    """Connections the accept loop has not taken yet wait in the kernel, up to the listen backlog; past
    it a client's connect is dropped and tried again a second later. The backlog is read back from the
    kernel: `ss` shows a listening socket's backlog as its Send-Q."""
    import subprocess

    port = api.server_address[1]
    listing = subprocess.run(
        ["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True, check=True
    ).stdout.split()
    assert int(listing[2]) >= 128, listing  # State Recv-Q Send-Q Local Peer


def test_a_body_over_the_limit_announced_with_expect_100_continue_gets_its_413_not_a_100(api):  # noqa: F811
    host, port = api.server_address[:2]
    with socket.create_connection((host, port), timeout=TIMEOUT_S) as client:
        client.sendall(
            b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 99999999\r\nExpect: 100-continue\r\n\r\n"
        )
        first = client.recv(4096).split(b"\r\n", 1)[0]
    assert first.startswith(b"HTTP/1.1 413 "), first
    # and one within the limit gets its 100 first, then its answer
    body = json.dumps(BODY).encode()
    with socket.create_connection((host, port), timeout=TIMEOUT_S) as client:
        client.sendall(
            b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            + f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\n\r\n".encode()
        )
        assert client.recv(4096).startswith(b"HTTP/1.1 100 Continue"), "no 100 for a body within the limit"
        client.sendall(body)
        answer = b""
        while chunk := client.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]


def test_a_request_line_in_absolute_form_is_routed_by_its_path(api):  # noqa: F811
    connection = connect(api)
    host, port = api.server_address[:2]
    try:  # as a proxy forwards it: scheme and host in the request line
        connection.request("GET", f"http://{host}:{port}/health?probe=1")
        health = connection.getresponse()
        assert health.status == 200 and json.loads(health.read())["status"] == "ok"
        body = json.dumps(BODY).encode()
        connection.request(
            "POST", f"http://{host}:{port}/v1/completions", body, {"Content-Type": "application/json"}
        )
        completion = connection.getresponse()
        reply = json.loads(completion.read())
        assert completion.status == 200, reply
        assert (
            reply["choices"][0]["text"]
            == request(api, "POST", "/v1/completions", BODY)[1]["choices"][0]["text"]
        )
    finally:
        connection.close()


def test_a_client_resetting_its_connection_is_one_debug_line_not_a_traceback(api, caplog, capfd):  # noqa: F811
    """A client that resets a kept-alive connection (RST, as a killed process or a load balancer does)
    is no fault of the server: the standard library would print a traceback on stderr."""
    import logging
    import struct
    import time

    caplog.set_level(logging.DEBUG, logger="partition.api.server")
    host, port = api.server_address[:2]
    client = socket.create_connection((host, port), timeout=TIMEOUT_S)
    body = json.dumps({"prompt": "Hi", "max_tokens": 1, "top_k": 1}).encode()
    client.sendall(
        b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    reply = client.recv(65536)
    assert reply.startswith(b"HTTP/1.1 200")
    head, _, got = reply.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
    while len(got) < length:  # the whole answer first: the reset must hit the wait for the next request
        got += client.recv(65536)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close sends RST
    client.close()
    deadline, stderr = time.monotonic() + TIMEOUT_S, ""
    while "dropped its connection" not in caplog.text and "Traceback" not in stderr:
        assert time.monotonic() < deadline, "the reset was never handled"
        time.sleep(0.05)
        stderr += capfd.readouterr().err
    assert "Traceback" not in stderr + capfd.readouterr().err
    status, _ = request(api, "GET", "/v1/models")  # and it serves on
    assert status == 200


@pytest.fixture(scope="module")
def web_api(deployed):  # noqa: F811
    """The endpoint open to one web origin, with an API key (a browser page's script calling it)."""
    with api_server(
        deployed, token="a-key-of-sixteen-chars", allowed_origins=("http://localhost:3000",)
    ) as server:
        yield server


def test_a_browsers_preflight_from_an_allowed_origin_is_answered_without_the_key(web_api):
    connection = connect(web_api)
    try:
        connection.request("OPTIONS", "/v1/chat/completions", headers={
            "Origin": "http://localhost:3000", "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type"})  # fmt: skip
        answer = connection.getresponse()
        assert answer.status == 204 and answer.read() == b""
        assert answer.getheader("Access-Control-Allow-Origin") == "http://localhost:3000"
        assert "POST" in answer.getheader("Access-Control-Allow-Methods")
        assert "Authorization" in answer.getheader("Access-Control-Allow-Headers")
        # the request itself: its reply names the origin, so the page's script may read it
        connection.request("POST", "/v1/completions", body=json.dumps(BODY), headers={
            "Origin": "http://localhost:3000", "Authorization": "Bearer a-key-of-sixteen-chars",
            "Content-Type": "application/json"})  # fmt: skip
        reply = connection.getresponse()
        assert reply.status == 200 and json.loads(reply.read())["usage"]["completion_tokens"] == 4
        assert reply.getheader("Access-Control-Allow-Origin") == "http://localhost:3000"
        assert reply.getheader("Vary") == "Origin"
    finally:
        connection.close()


def test_another_origin_gets_no_cors_headers_and_its_preflight_is_refused(web_api, api):  # noqa: F811
    for server in (web_api, api):  # an origin not listed; and no origin listed at all
        connection = connect(server)
        try:
            connection.request("OPTIONS", "/v1/chat/completions", headers={
                "Origin": "http://evil.example", "Access-Control-Request-Method": "POST"})  # fmt: skip
            refused = connection.getresponse()
            assert (
                refused.status == 405 and json.loads(refused.read())["error"]["code"] == "method_not_allowed"
            )
            assert refused.getheader("Access-Control-Allow-Origin") is None
            connection.request("GET", "/health", headers={"Origin": "http://evil.example"})
            health = connection.getresponse()
            health.read()
            assert health.status == 200 and health.getheader("Access-Control-Allow-Origin") is None
        finally:
            connection.close()


def test_an_error_reply_names_the_allowed_origin_too(web_api):
    """So that the page's script can read why (here: no key)."""
    connection = connect(web_api)
    try:
        connection.request("GET", "/v1/models", headers={"Origin": "http://localhost:3000"})
        refused = connection.getresponse()
        refused.read()
        assert refused.status == 401
        assert refused.getheader("Access-Control-Allow-Origin") == "http://localhost:3000"
    finally:
        connection.close()
