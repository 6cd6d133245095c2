"""Ray integration (deploy, serve): stage actors placed on the nodes of the plan's devices.

Ray places and supervises; the data path stays the gRPC chain. Importing this package needs `ray`
(`pip install partition[ray]`).
"""
