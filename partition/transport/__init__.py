"""The data plane between machines (deploy, serve, profile): the `.proto` contract's generated code,
the one tensor<->proto converter, channels (TLS, token auth, deadlines, size limits), the server
with health and reflection, and thin servicers over partition/runtime.
"""
