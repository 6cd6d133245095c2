"""The stage worker (serve): one loaded segment, sessions with KV-cache slots, checked steps.

Nothing here knows about gRPC; partition/transport/ decodes requests, calls the runtime and encodes
its answers.
"""
