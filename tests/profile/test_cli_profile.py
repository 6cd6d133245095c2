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


def test_bad_values_are_one_line_errors(capsys, tmp_path):
    assert (
        main(["profile", "--model", "smollm2-135m", "--repeats", "0", "--out", str(tmp_path / "d.json")]) == 2
    )
    assert "repeats must be >= 1" in capsys.readouterr().err


def test_a_cache_dir_that_names_a_file_is_refused_before_anything_is_measured(tmp_path, monkeypatch, capsys):
    import partition.profile

    measured = []
    monkeypatch.setattr(partition.profile, "profile_model", lambda *a, **k: measured.append(a))
    a_file = tmp_path / "profiles"
    a_file.write_text("not a folder")
    argv = ["profile", "--model", "smollm2-135m", "--cache-dir", str(a_file), "--refresh"]
    assert main([*argv, "--out", str(tmp_path / "device.json")]) == 2
    err = capsys.readouterr().err
    assert f"the profile cache {a_file} is a file, not a folder" in err and "--cache-dir" in err
    assert measured == [] and a_file.read_text() == "not a folder"
    under_a_file = a_file / "sub"  # a parent that is a file
    assert (
        main(
            [
                "profile",
                "--model",
                "smollm2-135m",
                "--cache-dir",
                str(under_a_file),
                "--out",
                str(tmp_path / "d.json"),
            ]
        )
        == 2
    )
    assert f"cannot make the profile cache folder {under_a_file}: Not a directory" in capsys.readouterr().err
    assert measured == []
