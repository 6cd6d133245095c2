"""Generated from protos/partition/v1 by `make protos`; do not edit."""
