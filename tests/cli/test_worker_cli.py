"""`partition worker` as a user starts it: one line on stderr says where it serves (the port chosen for
port 0 too), and an address the machine lacks is named as such."""

import re
import select
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from partition.cli import main

# TEST-NET-1 (RFC 5737): documentation only, never an address of a real machine
NOT_HERE = "192.0.2.1"


def test_a_worker_says_where_it_serves_without_verbose_logging(tmp_path):
    ready = tmp_path / "ready.json"
    worker = subprocess.Popen(
        [sys.executable, "-m", "partition", "worker", "--listen", "127.0.0.1:0", "--name", "announced",
         "--threads", "1", "--ready-file", str(ready)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        # the first line it prints, once serving (torch's import takes seconds)
        said = select.select([worker.stderr], [], [], 60)[0]
        line = worker.stderr.readline() if said else "nothing within 60 s"
        announced = ready.read_text() if ready.exists() else "no ready file"
    finally:
        worker.terminate()
        out, _ = worker.communicate(timeout=60)
    served = re.fullmatch(r"worker announced serving on 127\.0\.0\.1:(\d+) \(plaintext\)\n", line)
    assert served and int(served.group(1)) > 0, line
    assert f'"port": {served.group(1)}' in announced  # the port the ready file names
    assert not ready.exists()  # gone with the worker: it never names one that stopped
    assert out == ""  # stdout stays clean
    assert worker.returncode == 0


def test_an_address_this_machine_lacks_is_named_not_blamed_on_the_port(capfd):
    assert main(["worker", "--listen", f"{NOT_HERE}:7001", "--name", "w"]) == 2
    err = capfd.readouterr().err
    assert err.count("\n") == 1, err  # our line alone, none from grpc's core
    assert (
        f"cannot listen on {NOT_HERE}:7001: Cannot assign requested address; {NOT_HERE} is not an address"
        in err
    )
    assert "listen on one of its addresses, or on 0.0.0.0" in err and "port is in use" not in err, err


@pytest.mark.parametrize(
    "family, host", [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "[::1]")], ids=["ipv4", "ipv6"]
)
def test_a_port_in_use_is_said_once_in_our_words_only(family, host, capfd):
    with socket.socket(family) as taken:
        taken.bind((host.strip("[]"), 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["worker", "--listen", f"{host}:{port}", "--name", "w"]) == 2
    err = capfd.readouterr().err  # the process's stderr: what grpc's core writes there too
    assert err == (
        f"partition worker: error: cannot listen on {host}:{port}: Address already in use; "
        "the port is in use: stop what listens there, or choose another port\n"
    ), err


def test_a_worker_name_that_could_be_a_path_is_refused(capsys):
    for name in ("../evil", "a/b", "", "-x"):
        assert main(["worker", "--listen", "127.0.0.1:0", f"--name={name}"]) == 2, name
        assert f"--name: the device name {name!r} is not one plain word" in capsys.readouterr().err


def test_tls_files_that_are_not_pem_are_named_before_anything_listens(tmp_path, capsys):
    not_pem = tmp_path / "cert.pem"
    not_pem.write_text("not a certificate\n")
    assert main(["worker", "--listen", "127.0.0.1:0", "--name", "w", "--tls-cert", str(not_pem),
                 "--tls-key", str(not_pem)]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert f"--tls-cert {not_pem} and --tls-key {not_pem} are not a PEM certificate" in err, err
    assert "bind" not in err, err


def test_a_ready_file_under_a_file_is_refused_before_the_worker_serves(tmp_path, capfd):
    (tmp_path / "a-file").write_text("")
    ready = tmp_path / "a-file" / "x"
    with pytest.raises(SystemExit) as usage:  # refused as the command line is read
        main(["worker", "--listen", "127.0.0.1:0", "--name", "w", "--ready-file", str(ready)])
    assert usage.value.code == 2
    err = capfd.readouterr().err
    assert f"argument --ready-file: {tmp_path / 'a-file'} is a file, so {ready} cannot be made" in err, err
    assert "serving" not in err and "File exists" not in err, err


def test_a_ready_file_that_cannot_be_written_ends_the_worker_cleanly(tmp_path):
    # a path that passes every check as the command line is read, in a folder where nobody, root
    # included, can make a file: sysfs
    ready = Path("/sys/partition-ready")
    ended = subprocess.run(
        [sys.executable, "-m", "partition", "worker", "--listen", "127.0.0.1:0", "--name", "w",
         "--threads", "1", "--ready-file", str(ready)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert ended.returncode == 2, ended.stderr
    assert f"cannot write {ready}: Permission denied; give another path" in ended.stderr
    assert "Exception ignored" not in ended.stderr and "Traceback" not in ended.stderr, ended.stderr
