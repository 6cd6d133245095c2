"""`partition worker` as a user starts it: one line on stderr says where it serves (the port chosen for
port 0 too), and an address the machine lacks is named as such."""

import re
import select
import subprocess
import sys

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
    finally:
        worker.terminate()
        out, _ = worker.communicate(timeout=60)
    served = re.fullmatch(r"worker announced serving on 127\.0\.0\.1:(\d+) \(plaintext\)\n", line)
    assert served and int(served.group(1)) > 0, line
    assert f'"port": {served.group(1)}' in ready.read_text()  # the port the ready file names
    assert out == ""  # stdout stays clean
    assert worker.returncode == 0


def test_an_address_this_machine_lacks_is_named_not_blamed_on_the_port(capsys):
    assert main(["worker", "--listen", f"{NOT_HERE}:7001", "--name", "w"]) == 2
    err = capsys.readouterr().err
    assert (
        f"cannot listen on {NOT_HERE}:7001: Cannot assign requested address; {NOT_HERE} is not an address"
        in err
    )
    assert "listen on one of its addresses, or on 0.0.0.0" in err and "port is in use" not in err, err
