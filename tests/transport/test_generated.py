"""The committed generated code matches protos/ (regenerate with `make protos`)."""

import filecmp

import pytest

from partition.transport import protogen

pytest.importorskip("grpc_tools", reason="grpcio-tools (the dev extra) regenerates the proto code")


def test_generated_code_is_up_to_date(tmp_path):
    protogen.generate(tmp_path)
    fresh = sorted(p.name for p in tmp_path.iterdir())
    committed = sorted(p.name for p in protogen.GENERATED.iterdir() if p.is_file())
    assert fresh == committed, "generated files differ from the committed ones: run `make protos`"
    stale = [
        name for name in fresh if not filecmp.cmp(tmp_path / name, protogen.GENERATED / name, shallow=False)
    ]
    assert not stale, f"stale generated code in {stale}: run `make protos` and commit the result"


def test_generated_imports_are_package_relative():
    for path in protogen.GENERATED.glob("*.py"):
        assert "from partition.v1" not in path.read_text(), f"{path.name} imports partition.v1"


def test_contract_registers_the_stage_service():
    from partition.transport.generated import stage_pb2

    service = stage_pb2.DESCRIPTOR.services_by_name["Stage"]
    assert service.full_name == "partition.v1.Stage"
    methods = {m.name: (m.client_streaming, m.server_streaming) for m in service.methods}
    assert methods == {
        "LoadSegment": (False, False),
        "Forward": (True, True),
        "EndSession": (False, False),
        "Profile": (False, False),
        "Probe": (True, True),
    }


def test_a_forward_request_step_is_wire_identical_to_a_forward_reply_result():
    """The last stage relays ForwardRequest bytes as a ForwardReply (partition/transport/forward.py)."""
    from partition.transport.generated import forward_pb2

    request = forward_pb2.ForwardRequest.DESCRIPTOR.fields_by_name["step"]
    reply = forward_pb2.ForwardReply.DESCRIPTOR.fields_by_name["result"]
    assert (request.number, request.message_type) == (reply.number, reply.message_type)
