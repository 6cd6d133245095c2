from . import deploy_pb2 as _deploy_pb2
from . import forward_pb2 as _forward_pb2
from . import measure_pb2 as _measure_pb2
from google.protobuf import descriptor as _descriptor
from typing import ClassVar as _ClassVar

DESCRIPTOR: _descriptor.FileDescriptor
