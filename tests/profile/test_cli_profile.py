import json

from partition.cli import main
from tests.profile.conftest import SETTINGS


def test_profile_command_writes_the_profile_and_prints_the_table(
    server_profile, profile_dir, tmp_path, capsys
):
    out = tmp_path / "device.json"
    argv = ["profile", "--model", "smollm2-135m", "--threads", "1", "--name", "server"]
    argv += ["--prefill-lengths", *map(str, SETTINGS.prefill_lengths)]
    argv += ["--context-lengths", *map(str, SETTINGS.context_lengths)]
    argv += ["--repeats", str(SETTINGS.repeats), "--warmup", str(SETTINGS.warmup)]
    argv += ["--min-time", str(SETTINGS.min_time_s), "--cache-dir", str(profile_dir), "--out", str(out)]
    assert main(argv) == 0  # same key as the session's server profile: answered from the cache
    data = json.loads(out.read_text())
    assert data["schema"] == "partition/device-profile" and data["block"]["kv_bytes_per_token"] == 1536
    text = capsys.readouterr().out
    assert (
        "smollm2-135m (30 blocks, float32) on server" in text and "block" in text and f"wrote {out}" in text
    )


def test_bad_values_are_one_line_errors(capsys):
    assert main(["profile", "--model", "smollm2-135m", "--repeats", "0", "--out", "/dev/null"]) == 2
    assert "repeats must be >= 1" in capsys.readouterr().err
