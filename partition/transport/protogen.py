"""Regenerate the Python code for the `.proto` contract (deploy-time tooling, `make protos`).

protoc writes `partition/v1/*_pb2.py` with absolute imports (`from partition.v1 import ...`) that
would collide with our own `partition` package, so the files are flattened into
`partition/transport/generated/` and their imports made package-relative. The proto file names
inside the descriptors stay `partition/v1/*.proto`, which is what server reflection reports.

    python -m partition.transport.protogen            # rewrite partition/transport/generated
    python -m partition.transport.protogen --out DIR  # write elsewhere (the staleness test)
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PROTO_ROOT = REPO / "protos"
PROTO_PACKAGE = "partition/v1"
GENERATED = Path(__file__).resolve().parent / "generated"

_INIT = '"""Generated from protos/partition/v1 by `make protos`; do not edit."""\n'
# `from partition.v1 import tensor_pb2 as partition_dot_v1_dot_tensor__pb2` -> `from . import ...`
_ABSOLUTE_IMPORT = re.compile(r"^from partition\.v1 import ", re.MULTILINE)
# Message classes get `__module__` from this string; point it at where the module really lives.
_MODULE_NAME = re.compile(r"'partition\.v1\.(\w+_pb2)'")


def proto_files() -> list[Path]:
    return sorted((PROTO_ROOT / PROTO_PACKAGE).glob("*.proto"))


def generate(out: Path) -> list[Path]:
    """Write the flattened, import-fixed modules into `out`; return the files written."""
    from grpc_tools import protoc  # dev dependency (grpcio-tools); only needed to regenerate

    protos = proto_files()
    if not protos:
        raise FileNotFoundError(f"no .proto files under {PROTO_ROOT / PROTO_PACKAGE}")
    # protoc needs grpc_tools' bundled well-known types (google/protobuf/*.proto) on its path.
    well_known = Path(protoc.__file__).parent / "_proto"
    with tempfile.TemporaryDirectory() as scratch:
        args = [
            "grpc_tools.protoc",
            f"-I{PROTO_ROOT}",
            f"-I{well_known}",
            f"--python_out={scratch}",
            f"--pyi_out={scratch}",
            f"--grpc_python_out={scratch}",
            *(str(p.relative_to(PROTO_ROOT)) for p in protos),
        ]
        if protoc.main(args) != 0:
            raise RuntimeError(f"protoc failed on {', '.join(p.name for p in protos)}")
        out.mkdir(parents=True, exist_ok=True)
        written = [out / "__init__.py"]
        written[0].write_text(_INIT)
        for produced in sorted((Path(scratch) / PROTO_PACKAGE).iterdir()):
            text = _ABSOLUTE_IMPORT.sub("from . import ", produced.read_text())
            text = _MODULE_NAME.sub(r"'partition.transport.generated.\1'", text)
            if produced.name.endswith("_pb2_grpc.py") and "Stub" not in text:
                continue  # a .proto without a service: protoc's stub module would be empty
            target = out / produced.name
            target.write_text(text)
            written.append(target)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=GENERATED, help="output directory")
    args = parser.parse_args(argv)
    if args.out.resolve() == GENERATED:
        # Start clean so a deleted .proto leaves no orphaned module behind.
        shutil.rmtree(GENERATED, ignore_errors=True)
    for path in generate(args.out):
        sys.stdout.write(f"wrote {path}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
