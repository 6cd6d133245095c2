"""Client channels and their security settings (deploy, serve, profile: every call between machines).

One `TransportConfig` describes how this process talks to workers: TLS files, the shared token,
message size and keepalive. The coordinator and every worker (for its downstream stage and
worker-to-worker probes) open channels through `open_channel`, so all links share one policy.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import grpc

from partition.artifacts import read_text
from partition.errors import ConfigError
from partition.types import check_address

AUTH_HEADER = "authorization"  # metadata key; value "Bearer <token>"
# Prefill activations of a long prompt are megabytes (2048 tokens x 576 x 4 B = 4.7 MB), past gRPC's
# 4 MiB default; logits stay small because the last stage returns only what sampling needs.
MAX_MESSAGE_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True)
class TransportConfig:
    tls_cert: Path | None = None  # PEM certificate chain: the server's, and the client's for mutual TLS
    tls_key: Path | None = None  # PEM private key of tls_cert
    tls_ca: Path | None = (
        None  # PEM CA bundle: clients verify servers with it; servers then require client certs
    )
    token: str | None = None  # shared secret sent as `authorization: Bearer <token>`; None = no auth
    tls_server_name: str | None = (
        None  # expected name in the server certificate when it differs from the host
    )
    max_message_bytes: int = MAX_MESSAGE_BYTES  # bytes, both directions
    # Seconds between HTTP/2 pings on idle connections: a peer that stops answering them (a dead host, a
    # stopped or hung process) is given up keepalive_s + KEEPALIVE_TIMEOUT_MS (10 s) after it went
    # quiet, mid-step included (a step has no deadline); with 30 s a hung worker held its request
    # silent for over a minute.
    keepalive_s: float = 10.0

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None or self.tls_ca is not None

    @staticmethod
    def from_files(
        tls_cert: str | Path | None = None,
        tls_key: str | Path | None = None,
        tls_ca: str | Path | None = None,
        token_file: str | Path | None = None,
        tls_server_name: str | None = None,
    ) -> TransportConfig:
        """Check the files exist and read the token; ConfigError naming the flag otherwise."""
        cert, key, ca = (
            _readable(p, flag)
            for p, flag in ((tls_cert, "--tls-cert"), (tls_key, "--tls-key"), (tls_ca, "--tls-ca"))
        )
        if (cert is None) != (key is None):
            raise ConfigError("--tls-cert and --tls-key go together: give both or neither")
        _check_pem(cert, key, ca)
        token = read_token(token_file) if token_file is not None else None
        return TransportConfig(
            tls_cert=cert, tls_key=key, tls_ca=ca, token=token, tls_server_name=tls_server_name
        )


def _check_pem(cert: Path | None, key: Path | None, ca: Path | None) -> None:
    """ConfigError unless the files are PEM, the key is the certificate's, and the CA file holds
    certificates: gRPC would only say that it failed to bind, or to connect."""
    import ssl

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        if cert is not None:
            context.load_cert_chain(
                cert, key, password=lambda: b""
            )  # an encrypted key: refused, not asked for
    except ssl.SSLError as error:
        raise ConfigError(
            f"--tls-cert {cert} and --tls-key {key} are not a PEM certificate and its private key "
            f"({error.reason or error}); give the files `openssl req -x509 -newkey ...` writes"
        ) from None
    try:
        if ca is not None:
            context.load_verify_locations(cafile=ca)
    except ssl.SSLError as error:
        raise ConfigError(
            f"--tls-ca {ca} holds no PEM certificate ({error.reason or error}); give the CA's certificate"
        ) from None


def read_token(path: str | Path, flag: str = "--token-file") -> str:
    """A shared secret (the workers' token, the HTTP API key): the file's content without surrounding
    whitespace; at least 16 characters. `flag` names the file in errors."""
    file = _readable(path, flag)
    token = read_text(file, flag).strip()
    if len(token) < 16:
        raise ConfigError(
            f"{flag} {file} holds {len(token)} characters; use at least 16, e.g. "
            "`python -c 'import secrets; print(secrets.token_urlsafe(32))' > token`"
        )
    return token


def auth_metadata(config: TransportConfig) -> tuple[tuple[str, str], ...]:
    """Metadata to send on every call (empty without a token)."""
    return ((AUTH_HEADER, f"Bearer {config.token}"),) if config.token else ()


KEEPALIVE_TIMEOUT_MS = 10_000  # a keepalive ping unanswered this long ends the connection's calls
RECONNECT_MIN_MS = 250
RECONNECT_MAX_MS = 2_000
# How long a lost peer is waited for before a call to it fails: a supervisor's restart, then one
# reconnect attempt (at most RECONNECT_MAX_MS after the last) and a margin. A worker stopped with
# SIGTERM and started again at once listens 1.4-3.9 s after its drain ended its calls (the old process
# exits 0.1-2.6 s after, a new one listens 1.3 s after its start), so a wait of one reconnect alone
# (3 s) lost most such requests; a kill -9 and restart takes the same 1.3 s to listen.
RESTART_S = 5.0
RECONNECT_WAIT_S = RESTART_S + RECONNECT_MAX_MS / 1000 + 1.0


# What gRPC's asyncio call says (as INTERNAL) of a write its core could not start: the stream's connection
# broke under it (its peer killed mid-step), or the peer ended the call as we wrote, its status lost.
CORE_WRITE_FAILED = "Internal error from Core"


def call_status(
    code: grpc.StatusCode, details: str, channel: grpc.aio.Channel
) -> tuple[grpc.StatusCode, str]:
    """How a call on `channel` ended, a write the core refused once the connection broke said as what it
    is: UNAVAILABLE (the peer is gone, and a request resumes once it is back), not INTERNAL (a fault of
    the pipeline). With the channel still connected, the peer only ended the call as we wrote, and
    INTERNAL stands."""
    if (
        code == grpc.StatusCode.INTERNAL
        and details == CORE_WRITE_FAILED
        and channel.get_state(try_to_connect=False) != grpc.ChannelConnectivity.READY
    ):
        return grpc.StatusCode.UNAVAILABLE, f"the connection broke mid-call ({details})"
    return code, details


async def reachable(channel: grpc.aio.Channel, timeout_s: float = RECONNECT_WAIT_S) -> bool:
    """Wait until `channel` is connected, at most `timeout_s`; whether it is. A peer that went away is
    tried again at the reconnect backoff, and until then calls to it fail at once even when it is back:
    this waits for that attempt."""
    try:
        await asyncio.wait_for(channel.channel_ready(), timeout_s)
    except TimeoutError:
        return False
    return True


def channel_options(config: TransportConfig) -> list[tuple[str, int | str]]:
    options: list[tuple[str, int | str]] = [
        ("grpc.max_send_message_length", config.max_message_bytes),
        ("grpc.max_receive_message_length", config.max_message_bytes),
        ("grpc.keepalive_time_ms", int(config.keepalive_s * 1000)),
        ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
        # gRPC's own timeout of every ping, 60 s by default, is what ended a call to a hung peer
        ("grpc.http2.ping_timeout_ms", KEEPALIVE_TIMEOUT_MS),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.keepalive_permit_without_calls", 1),
        # A worker that went away is tried again at least every RECONNECT_MAX_MS (gRPC's default backs
        # off to 120 s), so one started again at its address serves the next request within seconds.
        # Not grpc.min_reconnect_backoff_ms: gRPC core takes it as the timeout of each connection
        # attempt (default 20 s), and a handshake over a slow link would fail under a short one.
        ("grpc.initial_reconnect_backoff_ms", RECONNECT_MIN_MS),
        ("grpc.max_reconnect_backoff_ms", RECONNECT_MAX_MS),
    ]
    if config.tls_server_name:
        options.append(("grpc.ssl_target_name_override", config.tls_server_name))
    return options


def server_options(config: TransportConfig) -> list[tuple[str, int]]:
    return [
        ("grpc.max_send_message_length", config.max_message_bytes),
        ("grpc.max_receive_message_length", config.max_message_bytes),
        # Accept the clients' keepalive pings (default policy would answer them with GOAWAY).
        ("grpc.http2.min_ping_interval_without_data_ms", int(config.keepalive_s * 1000 / 2)),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_ping_strikes", 0),
        # gRPC binds with SO_REUSEPORT by default: a second worker on a taken port would start and
        # take half of the connections meant for the first. Fail the bind instead.
        ("grpc.so_reuseport", 0),
    ]


def channel_credentials(config: TransportConfig) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=_read(config.tls_ca),
        private_key=_read(config.tls_key),
        certificate_chain=_read(config.tls_cert),
    )


def server_credentials(config: TransportConfig) -> grpc.ServerCredentials:
    if config.tls_cert is None or config.tls_key is None:
        raise ConfigError("a TLS server needs --tls-cert and --tls-key")
    return grpc.ssl_server_credentials(
        [(_read(config.tls_key), _read(config.tls_cert))],
        root_certificates=_read(config.tls_ca),
        require_client_auth=config.tls_ca is not None,
    )


def open_channel(address: str, config: TransportConfig) -> grpc.aio.Channel:
    """An asyncio channel to `host:port` (TLS when the config has TLS files)."""
    check_address(address)
    if config.tls:
        return grpc.aio.secure_channel(address, channel_credentials(config), options=channel_options(config))
    return grpc.aio.insecure_channel(address, options=channel_options(config))


def open_blocking_channel(address: str, config: TransportConfig) -> grpc.Channel:
    """A blocking channel, for command-line tools and tests that do not run an event loop."""
    check_address(address)
    if config.tls:
        return grpc.secure_channel(address, channel_credentials(config), options=channel_options(config))
    return grpc.insecure_channel(address, options=channel_options(config))


def _readable(path: str | Path | None, flag: str) -> Path | None:
    if path is None:
        return None
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"{flag} {file}: {'a directory, not a file' if file.is_dir() else 'no such file'}")
    return file


def _read(path: Path | None) -> bytes | None:
    return path.read_bytes() if path is not None else None
