"""Shared-token auth and (mutual) TLS on real worker processes."""

import asyncio
import json
import shutil
import subprocess
import sys
import tomllib
from dataclasses import replace

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from partition.coordinator.workers import worker_name_at
from partition.transport.channels import TransportConfig, open_blocking_channel
from partition.transport.client import Chain, StageCallError
from tests.transport.helpers import SEGMENTS, new_session_id, serves

TOKEN = "a-shared-secret-of-some-length"


@pytest.fixture(scope="module")
def token_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("secrets") / "token"
    path.write_text(TOKEN + "\n")
    return path


@pytest.fixture(scope="module")
def authed(start_worker, token_file):
    return [start_worker(name, "--token-file", str(token_file)) for name in ("auth-a", "auth-b")]


def deploy_with(workers, config):
    async def run():
        chain = Chain([w.address for w in workers], config)
        try:
            replies = await chain.load("plan", 1, "tiny", SEGMENTS, ["raw", "raw"])
        finally:
            await chain.close()
        return replies[0].model_digest

    return asyncio.run(run())


def probe(address, config, metadata=None):
    with open_blocking_channel(address, config) as channel:
        call = channel.stream_stream("/partition.v1.Stage/Probe")
        return list(call(iter([b""]), timeout=10, metadata=metadata))


@pytest.mark.parametrize(
    ("metadata", "reason"),
    [(None, "no 'authorization' metadata"), ((("authorization", "Bearer wrong-token"),), "wrong token")],
)
def test_calls_without_the_token_are_unauthenticated(authed, metadata, reason):
    for method in ("Probe", "Forward", "NoSuchMethod"):
        with grpc.insecure_channel(authed[0].address) as channel:
            call = channel.stream_stream(f"/partition.v1.Stage/{method}")
            with pytest.raises(grpc.RpcError) as caught:
                list(call(iter([b""]), timeout=10, metadata=metadata))
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED, method
        assert reason in caught.value.details() and "--token-file" in caught.value.details()
    with grpc.insecure_channel(authed[0].address) as channel:
        unary = channel.unary_unary("/partition.v1.Stage/LoadSegment")
        with pytest.raises(grpc.RpcError) as caught:
            unary(b"", timeout=10, metadata=metadata)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    # the worker keeps serving: the token opens a whole chain, stage to stage included
    config = TransportConfig(token=TOKEN)
    digest = deploy_with(authed, config)
    assert serves(authed, digest, config=config)


def test_a_client_without_the_token_cannot_open_a_session(authed):
    config = TransportConfig(token=TOKEN)
    digest = deploy_with(authed, config)

    async def run():
        chain = Chain([w.address for w in authed], TransportConfig())
        try:
            await chain.open_session(new_session_id(), "plan", 1, digest)
        finally:
            await chain.close()

    with pytest.raises(StageCallError) as caught:
        asyncio.run(run())
    assert caught.value.code == grpc.StatusCode.UNAUTHENTICATED
    assert serves(authed, digest, config=config)


def test_health_needs_no_token(authed):
    with grpc.insecure_channel(authed[0].address) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="partition.v1.Stage"), timeout=10
        )
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A CA, and a server and a client certificate it signed (for IP 127.0.0.1)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make test certificates")
    d = tmp_path_factory.mktemp("pki")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl(
        "req",
        "-x509",
        *ec,
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=test-ca",
        cwd=d,
    )
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    for name in ("server", "client"):
        openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=d)
        openssl(
            "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", f"{name}.pem", "-days", "2", "-extfile", "san.ext", cwd=d,
        )  # fmt: skip
    return d


@pytest.fixture(scope="module")
def tls_workers(start_worker, pki, token_file):
    tls = (
        "--tls-cert",
        str(pki / "server.pem"),
        "--tls-key",
        str(pki / "server.key"),
        "--tls-ca",
        str(pki / "ca.pem"),
    )
    return [start_worker(name, *tls, "--token-file", str(token_file)) for name in ("tls-a", "tls-b")]


def test_mutual_tls_chain_serves_and_refuses_plaintext_and_anonymous_clients(tls_workers, pki):
    config = replace(
        TransportConfig.from_files(pki / "client.pem", pki / "client.key", pki / "ca.pem"), token=TOKEN
    )
    digest = deploy_with(tls_workers, config)
    assert serves(tls_workers, digest, config=config)  # coordinator -> a -> b over mutual TLS

    with pytest.raises(grpc.RpcError) as caught:
        probe(tls_workers[0].address, TransportConfig(token=TOKEN))  # plaintext to a TLS port
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE

    anonymous = TransportConfig(tls_ca=pki / "ca.pem", token=TOKEN)  # verifies the server, shows no cert
    with pytest.raises(grpc.RpcError) as caught:
        probe(tls_workers[0].address, anonymous)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert serves(tls_workers, digest, config=config)


def test_session_refs_are_checked_over_tls_too(tls_workers, pki):
    config = TransportConfig(
        tls_cert=pki / "client.pem", tls_key=pki / "client.key", tls_ca=pki / "ca.pem", token=TOKEN
    )
    digest = deploy_with(tls_workers, config)

    async def run():
        chain = Chain([w.address for w in tls_workers], config)
        try:
            await chain.open_session(new_session_id(), "plan", 7, digest)
        finally:
            await chain.close()

    with pytest.raises(StageCallError) as caught:
        asyncio.run(run())
    assert caught.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert serves(tls_workers, digest, config=config)


def test_profile_cluster_passes_the_token_and_names_a_worker_that_refuses_it(authed, token_file, tmp_path):
    cluster = tmp_path / "cluster.toml"  # each device named as its worker: profile checks that
    cluster.write_text(
        f'[[device]]\nname = "auth-a"\nrole = "edge"\naddress = "{authed[0].address}"\n\n'
        f'[[device]]\nname = "auth-b"\nrole = "server"\naddress = "{authed[1].address}"\n'
    )
    out = tmp_path / "profiled" / "cluster.toml"
    small = ["--prefill-lengths", "4", "8", "--context-lengths", "8", "16", "--repeats", "1"]
    command = [sys.executable, "-m", "partition", "profile", "--cluster", str(cluster), "--model", "tiny",
               "--out", str(out), *small]  # fmt: skip
    refused = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0
    assert f"device 'auth-a' at {authed[0].address} does not answer (UNAUTHENTICATED" in refused.stderr
    assert "give the worker's shared token with --token-file" in refused.stderr
    assert not out.parent.exists()  # nothing profiled, nothing written

    profiled = subprocess.run(
        [*command, "--token-file", str(token_file)], capture_output=True, text=True, timeout=300
    )
    assert profiled.returncode == 0, profiled.stderr[-3000:]
    assert {path.name for path in out.parent.glob("*.json")} == {"auth-a.json", "auth-b.json"}
    for path in out.parent.glob("*.json"):  # the model read inside each worker's --models-dir
        assert json.loads(path.read_text())["model"]["name"] == "tiny"
    links = tomllib.loads(out.read_text())["link"]
    assert {(link["from"], link["to"]) for link in links} == {("auth-a", "auth-b"), ("auth-b", "auth-a")}


def test_the_name_a_lost_workers_address_answers_with_is_asked_over_tls_with_the_token(tls_workers, pki):
    """serve's looks for a device planned around ask what answers at its address for its name
    (coordinator/replan.py): over mutual TLS with the token; without them the worker does not say."""
    config = TransportConfig(
        tls_cert=pki / "client.pem", tls_key=pki / "client.key", tls_ca=pki / "ca.pem", token=TOKEN
    )
    assert worker_name_at(tls_workers[1].address, config) == "tls-b"
    with pytest.raises(grpc.RpcError) as caught:
        worker_name_at(tls_workers[1].address, replace(config, token=None))
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
