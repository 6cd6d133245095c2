import pytest

from partition.artifacts import save_profile
from partition.errors import ConfigError
from partition.plan.cluster import GB, MBPS, load_cluster
from partition.plan.synthetic import synthetic_profile
from partition.types import ModelRef

HEADER = """
[[device]]
name = "phone"
role = "edge"
profile = "phone.json"
memory_gb = 2.0
"""


@pytest.fixture
def folder(tmp_path):
    save_profile(synthetic_profile("phone", speed=0.3), tmp_path / "phone.json")
    save_profile(synthetic_profile("gpu", speed=10, memory_gb=24), tmp_path / "gpu.json")
    return tmp_path


def write(folder, body: str):
    path = folder / "cluster.toml"
    path.write_text(HEADER + body)
    return path


def test_issue_example_with_symmetric_link(folder):
    cluster = load_cluster(
        write(
            folder,
            """
[[device]]
name = "server-a"
role = "server"
profile = "gpu.json"
[[link]]
from = "phone"
to = "server-a"
bandwidth_mbps = 50
latency_ms = 10
""",
        )
    )
    assert cluster.edge.name == "phone" and cluster.edge.memory_bytes == 2 * GB
    assert cluster.device("server-a").memory_bytes == 24 * GB  # the profile's memory when memory_gb is absent
    there, back = cluster.link("phone", "server-a"), cluster.link("server-a", "phone")
    assert (
        there.bandwidth_Bps == back.bandwidth_Bps == 50 * MBPS and there.latency_s == back.latency_s == 0.01
    )


def test_both_directions_declared_are_kept_apart(folder):
    cluster = load_cluster(
        write(
            folder,
            """
[[device]]
name = "s"
role = "server"
profile = "gpu.json"
[[link]]
from = "phone"
to = "s"
bandwidth_mbps = 10
latency_ms = 20
[[link]]
from = "s"
to = "phone"
bandwidth_mbps = 100
latency_ms = 5
""",
        )
    )
    assert cluster.link("phone", "s").bandwidth_Bps == 10 * MBPS
    assert (
        cluster.link("s", "phone").bandwidth_Bps == 100 * MBPS
        and cluster.link("s", "phone").latency_s == 0.005
    )


def test_count_expands_a_group_and_group_links_apply_to_members(folder):
    cluster = load_cluster(
        write(
            folder,
            """
[[device]]
name = "gpu"
role = "server"
profile = "gpu.json"
memory_gb = 8
count = 3
[[link]]
from = "phone"
to = "gpu"
bandwidth_mbps = 100
latency_ms = 2
[[link]]
from = "gpu"
to = "gpu"
bandwidth_mbps = 10000
latency_ms = 0.1
""",
        )
    )
    assert [d.name for d in cluster.servers] == ["gpu-0", "gpu-1", "gpu-2"]
    assert cluster.link("gpu-2", "phone").latency_s == 0.002
    assert cluster.link("gpu-0", "gpu-2").bandwidth_Bps == 10000 * MBPS
    assert cluster.link("gpu-1", "gpu-1") is None


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (  # named with its file, as every other problem of the file is
            '[[device]]\nname = "x"\nrole = "edge"\nprofile = "gpu.json"\n',
            r"\.toml: a cluster needs exactly one device with role",
        ),
        (
            '[[device]]\nname = "phone"\nrole = "server"\nprofile = "gpu.json"\n',
            "the name 'phone' is already a ",
        ),
        (  # a second table of a group's name would take the links that name the group
            '[[device]]\nname = "g"\nrole = "server"\nprofile = "gpu.json"\ncount = 2\n'
            '[[device]]\nname = "g"\nrole = "server"\nprofile = "gpu.json"\nmemory_gb = 0.3\n',
            "device #3: the name 'g' is already a ",
        ),
        (
            '[[device]]\nname = "s"\nrole = "server"\nprofile = "gpu.json"\ncount = 2\naddress = "10.0.0.5:7001"\n',
            "2 devices cannot share one address; declare each as its own ",
        ),
        ('[[device]]\nname = "s"\nrole = "srv"\nprofile = "gpu.json"\n', "role must be"),
        ('[[device]]\nname = "s"\nrole = "server"\n', "needs profile"),
        (
            '[[device]]\nname = "s"\nrole = "server"\naddress = "10.0.0.5:7001"\n',
            "partition profile --cluster FILE",
        ),
        (
            '[[device]]\nname = "s"\nrole = "server"\nprofile = "nope.json"\n',
            r"device #2 \('s'\): cannot read file .*nope.json: No such file or directory; make it with "
            r"`partition profile --model MODEL --name s --out .*nope.json` on that device",
        ),
        (
            '[[device]]\nname = "s"\nrole = "server"\nprofile = "gpu.json"\nmemory_gb = -1\n',
            "memory_gb must be a positive",
        ),
        (
            '[[device]]\nname = "s"\nrole = "server"\nprofile = "gpu.json"\nmemory_gb = 1e300\n',
            "memory_gb = 1e\\+300 is no device's memory; give it in GB, e.g. 8",
        ),
        (
            '[[device]]\nname = "s"\nrole = "server"\nprofile = "gpu.json"\nmemory_gb = 1e-12\n',
            "memory_gb = 1e-12 is no device's memory",
        ),
        ('[[device]]\nname = "s"\nrole = "server"\nprofile = "gpu.json"\nflops = 1\n', "unknown key"),
        (
            '[[link]]\nfrom = "phone"\nto = "mars"\nbandwidth_mbps = 1\nlatency_ms = 1\n',
            "no device called 'mars'",
        ),
        ('[[link]]\nfrom = "phone"\nto = "phone"\nbandwidth_mbps = 1\nlatency_ms = 1\n', "to itself"),
        (
            '[[device]]\nname = "s"\nrole = "server"\nprofile = "gpu.json"\n[[link]]\nfrom = "phone"\nto = "s"\nlatency_ms = 1\n',
            "missing bandwidth_mbps",
        ),
        ("[extra]\n", "unknown table"),
        (
            '[[device]]\nname = "s"\nrole = "server"\nprofile = "gpu.json"\nthreads = 4\n',
            "profile it again with --threads 4",
        ),
        (
            '[[device]]\nname = "s"\nrole = "server"\nprofile = "gpu.json"\nthreads = 0\n',
            "threads must be a whole number >= 1, got 0",
        ),
        (
            '[[device]]\nname = "s"\nrole = "server"\nprofile = "gpu.json"\nthreads = "2"\n',
            "threads must be a whole number >= 1, got '2'",
        ),
        ("not toml [", "not valid TOML"),
        # serve reads the addresses of the same file: a plan made from it must be servable
        (
            '[[device]]\nname = "s"\nrole = "server"\nprofile = "gpu.json"\naddress = "host"\n',
            "'host' is not HOST:PORT",
        ),
        (
            '[[device]]\nname = "s"\nrole = "server"\nprofile = "gpu.json"\naddress = "h:99999"\n',
            'address must be "host:port" where its `partition worker --listen` listens',
        ),
        # a name becomes a file name (its profile, its worker's log folder): no path can be made of one
        (
            '[[device]]\nname = "../evil"\nrole = "server"\nprofile = "gpu.json"\n',
            "'../evil' is not one plain",
        ),
        (
            '[[device]]\nname = "a/b"\nrole = "server"\nprofile = "gpu.json"\n',
            "device #2: the device name 'a/b'",
        ),
        ('[[device]]\nname = ""\nrole = "server"\nprofile = "gpu.json"\n', "name '' is not one plain word"),
        ('[[device]]\nname = ".hidden"\nrole = "server"\nprofile = "gpu.json"\n', "starting with a letter"),
    ],
)
def test_malformed_cluster_files_say_what_to_fix(folder, body, message):
    with pytest.raises(ConfigError, match=message):
        load_cluster(write(folder, body))


def test_profiles_of_different_models_are_refused(folder):
    other = synthetic_profile("gpu", model=ModelRef("other", "d2", 30))
    save_profile(other, folder / "other.json")
    with pytest.raises(ConfigError, match="different models"):
        load_cluster(write(folder, '[[device]]\nname = "s"\nrole = "server"\nprofile = "other.json"\n'))


def test_a_misspelt_role_is_named_not_counted_as_a_missing_edge(folder):
    path = folder / "typo.toml"
    path.write_text('[[device]]\nname = "phone"\nrole = "egde"\nprofile = "phone.json"\n')
    with pytest.raises(ConfigError, match="""role must be "edge" or "server", not 'egde'"""):
        load_cluster(path)


def test_profiles_of_models_that_differ_only_in_their_blocks_are_told_apart():
    import dataclasses

    from partition.plan.synthetic import star_cluster

    edge = synthetic_profile("phone", speed=0.25)
    fewer = dataclasses.replace(edge.model, n_blocks=24)  # same digest: a truncated copy of the model
    server = dataclasses.replace(synthetic_profile("gpu", speed=20), model=fewer)
    with pytest.raises(ConfigError) as refused:
        star_cluster(edge, 2.0, [("gpu", server, 16.0)], (200, 5))
    digest = edge.model.digest
    assert f"({digest} with 24 blocks: gpu, {digest} with 30 blocks: phone)" in str(refused.value)


def test_a_profile_that_could_not_read_its_memory_needs_memory_gb(folder):
    save_profile(synthetic_profile("mac", memory_gb=0), folder / "mac.json")  # 0: none could be read there
    unknown = '[[device]]\nname = "s"\nrole = "server"\nprofile = "mac.json"\n'
    with pytest.raises(
        ConfigError, match=r"\('s'\): mac.json records no memory available .* give this device's memory_gb"
    ):
        load_cluster(write(folder, unknown))
    assert load_cluster(write(folder, unknown + "memory_gb = 16\n")).device("s").memory_bytes == 16 * GB
