"""The model engine: specs, units, segments with their own KV cache, weights loaded per segment.

source = resolve_model("smollm2-135m")
seg = load_segment(source, Segment(0, 12))
cache = seg.new_cache(slots=1, max_len=512)
hidden = seg.forward(ids, cache, slots=[0], positions=[0])
"""

from partition.model.kv_cache import KVCache
from partition.model.segment import SegmentModel, build_segment, load_segment
from partition.model.source import BUILTIN_MODELS, DEFAULT_MODEL, ModelSource, resolve_model
from partition.model.spec import ModelSpec

__all__ = [
    "BUILTIN_MODELS",
    "DEFAULT_MODEL",
    "KVCache",
    "ModelSource",
    "ModelSpec",
    "SegmentModel",
    "build_segment",
    "load_segment",
    "resolve_model",
]
