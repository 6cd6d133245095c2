import pytest

from partition.errors import ConfigError
from partition.transport.channels import TransportConfig, auth_metadata, read_token
from partition.types import check_address


def test_addresses_are_host_and_port():
    check_address("127.0.0.1:7001")
    check_address("[::1]:7001")
    check_address("0.0.0.0:0", listening=True)
    for bad in ("127.0.0.1", ":7001", "host:port", "127.0.0.1:0", "127.0.0.1:70000"):
        with pytest.raises(ConfigError, match="is not HOST:PORT"):
            check_address(bad)


def test_tokens_are_read_stripped_and_must_be_long(tmp_path):
    token = tmp_path / "token"
    token.write_text("  0123456789abcdef-long-enough \n")
    assert read_token(token) == "0123456789abcdef-long-enough"
    token.write_text("short")
    with pytest.raises(ConfigError, match="holds 5 characters; use at least 16"):
        read_token(token)
    with pytest.raises(ConfigError, match="--token-file .*: no such file"):
        read_token(tmp_path / "missing")


def test_tls_files_must_exist_and_cert_goes_with_key(tmp_path):
    cert = tmp_path / "cert.pem"
    cert.write_text("x")
    with pytest.raises(ConfigError, match="--tls-cert and --tls-key go together"):
        TransportConfig.from_files(tls_cert=cert)
    with pytest.raises(ConfigError, match="--tls-ca .*: no such file"):
        TransportConfig.from_files(tls_ca=tmp_path / "nope.pem")
    # files that are there but no PEM are named before any channel or server uses them (the certificates
    # that work: tests/transport/test_security.py)
    with pytest.raises(ConfigError, match=f"--tls-ca {cert} holds no PEM certificate"):
        TransportConfig.from_files(tls_ca=cert)
    with pytest.raises(
        ConfigError, match=f"--tls-cert {cert} and --tls-key {cert} are not a PEM certificate"
    ):
        TransportConfig.from_files(tls_cert=cert, tls_key=cert)


def test_auth_metadata_only_with_a_token():
    assert auth_metadata(TransportConfig()) == ()
    assert auth_metadata(TransportConfig(token="t" * 16)) == (("authorization", "Bearer " + "t" * 16),)
