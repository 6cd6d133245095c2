"""`partition profile` refuses a flag its mode would not use (one device, --cluster, --ray), before it
measures anything: a flag that changes nothing must not pass as if it had."""

import pytest

from partition.cli import build_parser
from partition.cli.profile import run
from partition.errors import ConfigError

PROFILE = ["profile", "--model", "smollm2-135m"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--cluster", "c.toml", "--dtype", "bfloat16"], "--dtype set how this machine alone is profiled"),
        (["--cluster", "c.toml", "--name", "x", "--cache-dir", "d"], "--name, --cache-dir set how"),
        (["--ray", "--device", "cpu"], "with --ray every device is profiled by its worker"),
        (["--ray", "--cluster", "c.toml"], "--ray profiles the Ray cluster's devices"),
        (["--edge", "phone"], "--edge names the edge of a Ray cluster: use it with --ray"),
    ],
)
def test_a_flag_the_mode_would_not_use_is_refused(extra, message):
    args = build_parser().parse_args([*PROFILE, *extra])
    with pytest.raises(ConfigError, match=message):
        run(args)


def test_a_device_name_the_cluster_file_would_refuse_is_refused_before_profiling(tmp_path):
    args = build_parser().parse_args(
        ["profile", "--model", "smollm2-135m", "--name", "a/b c", "--out", str(tmp_path / "d.json")]
    )
    with pytest.raises(ConfigError, match="--name: the device name 'a/b c' is not one plain word"):
        run(args)
    assert not (tmp_path / "d.json").exists()
