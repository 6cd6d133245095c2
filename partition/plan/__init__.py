"""Planning (profile -> plan -> deploy): choose which device runs which units, and how hops encode.

Pure Python: this package imports neither torch nor grpc, so it runs anywhere a plan is needed.
"""

from partition.plan.cluster import Cluster, Device, load_cluster, parse_cluster
from partition.plan.codecs import DEFAULT_CODECS, CodecSpec, load_codec_table, plan_codecs, select_codecs
from partition.plan.costmodel import evaluate
from partition.plan.planner import make_plan
from partition.plan.validate import chain_problem

__all__ = [
    "DEFAULT_CODECS",
    "Cluster",
    "CodecSpec",
    "Device",
    "chain_problem",
    "evaluate",
    "load_cluster",
    "load_codec_table",
    "make_plan",
    "parse_cluster",
    "plan_codecs",
    "select_codecs",
]
