"""A segment model: the units `[start, end)` of a model, with its own KV cache (deploy + serve).

`build_segment(spec, segment)` builds the modules for those units only; `load_segment(source, segment)`
also fills them, reading only that segment's tensors from the checkpoint. Chaining segments
`[0, k)` and `[k, n_units)` computes exactly what the whole model computes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import torch
from torch import nn

from partition.errors import ContextOverflowError
from partition.model.kv_cache import KVCache
from partition.model.layers import Block, Embedding, Head, StepContext, to_module_layout
from partition.model.rope import RotaryTable
from partition.model.spec import ModelSpec
from partition.types import Segment

LOADED_SHA256 = "loaded_sha256"  # attribute of a unit loaded by load_segment: unit_sha256 as loaded


class SegmentModel(nn.Module):
    def __init__(self, spec: ModelSpec, segment: Segment):
        super().__init__()
        segment.check_within(spec.n_blocks)
        self.spec = spec
        self.segment = segment
        self.block_ids = list(segment.blocks(spec.n_blocks))  # global block numbers owned
        self.embed = Embedding(spec) if segment.has_embed else None
        self.blocks = nn.ModuleList(Block(spec) for _ in self.block_ids)
        self.head = Head(spec) if segment.has_head(spec.n_blocks) else None
        self._rotary: RotaryTable | None = None

    # -- what a stage holds -------------------------------------------------------------------------

    @property
    def takes_token_ids(self) -> bool:
        return self.embed is not None

    @property
    def returns_logits(self) -> bool:
        return self.head is not None

    def units(self) -> dict[str, nn.Module]:
        """Unit name -> module, in order: `embed`, `block.i`, `head`."""
        units: dict[str, nn.Module] = {}
        if self.embed is not None:
            units["embed"] = self.embed
        units.update({f"block.{i}": block for i, block in zip(self.block_ids, self.blocks, strict=True)})
        if self.head is not None:
            units["head"] = self.head
        return units

    def put_unit(self, name: str, module: nn.Module) -> None:
        """Hold `module` as unit `name` (a name of `units()`) in place of the module built for it."""
        if name == "embed":
            self.embed = module
        elif name == "head":
            self.head = module
        else:
            self.blocks[self.block_ids.index(int(name.removeprefix("block.")))] = module

    def weight_bytes(self) -> int:
        return sum(p.nbytes for p in self.parameters())  # shared (tied) matrices count once

    def weights_digest(self) -> str:
        """Proves what a worker loaded: sha256 over this segment's units in order, each unit's name and
        the sha256 of its tensors as loaded (`unit_sha256`; `load_segment(hash_units=True)` hashes
        each unit while it reads the next, and a unit kept from the segment loaded before brings its
        hash along). A unit loaded without is hashed now, as it is."""
        sha = hashlib.sha256()
        for unit, module in self.units().items():
            sha.update(unit.encode())
            sha.update(getattr(module, LOADED_SHA256, None) or unit_sha256(module))
        return "sha256:" + sha.hexdigest()

    def new_cache(self, slots: int = 1, max_len: int | None = None) -> KVCache:
        """A preallocated KV cache for `slots` sessions of up to `max_len` tokens each."""
        max_len = max_len or self.spec.max_context
        if max_len > self.spec.max_context:
            raise ContextOverflowError(
                f"a cache of {max_len} tokens exceeds the model's context of {self.spec.max_context}"
            )
        param = next(self.parameters())
        spec = self.spec
        return KVCache(
            len(self.blocks), slots, spec.n_kv_heads, max_len, spec.head_dim, param.dtype, param.device
        )

    # -- running it ---------------------------------------------------------------------------------

    @torch.inference_mode()
    def forward(
        self,
        x: torch.Tensor,
        cache: KVCache,
        slots: Sequence[int],
        positions: Sequence[int],
        last_token_only: bool = False,
    ) -> torch.Tensor:
        """Run the segment for a batch of sessions.

        x: token ids [B, S] (int64) if the segment holds `embed`, else hidden states [B, S, D].
        slots[b], positions[b]: row b's cache slot and the position of its first new token.
        Returns hidden states [B, S, D], or logits [B, S, V] (or [B, 1, V] with last_token_only)
        if the segment holds `head`.
        """
        B, S = x.shape[0], x.shape[1]
        ctx = self._context(list(slots), list(positions), B, S, cache)
        if self.embed is not None:
            x = self.embed(x, ctx.positions)
        for index, block in enumerate(self.blocks):
            k_cache, v_cache = cache.layer(index)
            x = block(x, ctx, k_cache, v_cache)
        if self.head is not None:
            if last_token_only:
                x = x[:, -1:]
            x = self.head(x)
        return x

    def _context(self, slots: list[int], starts: list[int], B: int, S: int, cache: KVCache) -> StepContext:
        if len(slots) != B or len(starts) != B:
            raise ValueError(
                f"batch of {B} rows needs {B} slots and positions, got {len(slots)}, {len(starts)}"
            )
        if min(starts) < 0 or not all(0 <= slot < cache.slots for slot in slots):
            # a negative index would read and write another slot's keys, or the end of this one
            raise ValueError(
                f"positions must be >= 0 and slots in [0, {cache.slots}), got positions {starts}, slots {slots}"
            )
        kv_len = max(starts) + S
        if kv_len > cache.max_len:
            raise ContextOverflowError(
                f"position {kv_len} is past the cache's {cache.max_len} tokens; start a new session "
                "or plan a longer context"
            )
        device = cache.k.device
        dtype = cache.k.dtype
        positions_BS = self._positions_tensor(starts, S, device)
        cos = sin = None
        if self.spec.family != "gpt2" and self.blocks:
            rotary = self._rotary_table(cache.max_len, device)
            cos, sin = rotary.at(positions_BS, dtype)
        mask = None
        causal = False
        if B == 1:
            causal = S > 1 and starts[0] == 0
            if S > 1 and starts[0] > 0:
                mask = _causal_mask([starts[0]], S, kv_len, device)
        elif S > 1 or len(set(starts)) > 1:
            mask = _causal_mask(starts, S, kv_len, device)
        consecutive = slots == list(range(slots[0], slots[0] + B))
        slot_index = None if consecutive else torch.tensor(slots, device=device)
        return StepContext(slots, starts, S, positions_BS, kv_len, slot_index, cos, sin, mask, causal)

    def _positions_tensor(self, starts: list[int], S: int, device) -> torch.Tensor:
        """[B, S]: the position of every new token."""
        return torch.tensor(starts, device=device).unsqueeze(1) + torch.arange(S, device=device)

    def _rotary_table(self, max_len: int, device) -> RotaryTable:
        if self._rotary is None or self._rotary.cos.shape[0] < max_len or self._rotary.cos.device != device:
            self._rotary = RotaryTable(self.spec, max(max_len, 1), device)
        return self._rotary


def _causal_mask(starts: list[int], S: int, kv_len: int, device) -> torch.Tensor:
    """[B, 1, S, kv_len] bool: row b's query i (at position starts[b] + i) sees keys at positions <= it."""
    query_pos = torch.tensor(starts, device=device).view(-1, 1, 1) + torch.arange(S, device=device).view(
        1, S, 1
    )
    key_pos = torch.arange(kv_len, device=device).view(1, 1, kv_len)
    return (key_pos <= query_pos).unsqueeze(1)


def unit_sha256(module: nn.Module) -> bytes:
    """sha256 over one unit's tensors: each one's name within the unit, then its bytes."""
    sha = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        sha.update(name.encode())
        sha.update(tensor.detach().contiguous().cpu().view(torch.uint8).numpy())  # hashed in place
    return sha.digest()


def build_segment(spec: ModelSpec, segment: Segment) -> SegmentModel:
    """The modules of `segment`, parameters on the meta device (no memory) until weights are assigned."""
    with torch.device("meta"):
        return SegmentModel(spec, segment)


def load_segment(
    source,
    segment: Segment,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    huge_pages: bool = True,
    held: SegmentModel | None = None,
    hash_units: bool = False,
) -> SegmentModel:
    """Build `segment` of `source` and load only its units' tensors, one unit at a time.

    On the CPU each unit's weights then move into 2 MiB pages (partition/model/huge_pages.py) unless
    `huge_pages` is False. The units `held` holds too (a segment already loaded from the same
    checkpoint: what a worker served before a re-plan moved its range) are taken from it as they
    are, not read again (see `_units_to_keep`). With `hash_units` (a worker, which answers with the
    weights digest) each unit loaded is hashed as loaded, beside the reading of the next.
    """
    from partition.model.huge_pages import move_to_huge_pages
    from partition.model.weight_map import unit_state

    model = build_segment(source.spec, segment)
    kept = _units_to_keep(held, model, dtype, device) if held is not None else {}
    huge_pages = huge_pages and torch.device(device).type == "cpu"
    hashing = []
    # hashlib lets go of the GIL: a unit is hashed while the next is read (SmolLM2's [1,32) loaded and
    # digested in 1.4-1.7 s so, against 2.1-2.3 s hashed after the load; medians of 5 loads, 2 runs)
    with ThreadPoolExecutor(1, thread_name_prefix="unit-sha256") as hasher:
        for offset, (unit, module) in enumerate(model.units().items()):
            if unit in kept:
                model.put_unit(unit, kept[unit])
                continue
            state = unit_state(source, segment.start + offset)
            state = to_module_layout(
                module, {name: t.to(device=device, dtype=dtype) for name, t in state.items()}
            )
            module.load_state_dict(state, strict=True, assign=True)
            del state
            if huge_pages:
                move_to_huge_pages(module)
            if hash_units:
                hashing.append((module, hasher.submit(unit_sha256, module)))
    for module, digest in hashing:
        setattr(module, LOADED_SHA256, digest.result())
    share_tied_matrix(model, model)  # after hashing: an embedding's hash is of the table it loaded
    return model.eval()


def _units_to_keep(
    held: SegmentModel, model: SegmentModel, dtype: torch.dtype, device: torch.device | str
) -> dict[str, nn.Module]:
    """The units of `model` that `held` holds, by name. Both models then share those modules, which is
    safe as long as nothing changes a loaded unit: so an embedding is kept only when it reads its own
    table and `model` holds no head it could be tied to (`share_tied_matrix` would point it at the new
    head's matrix, under the model still serving). The caller vouches that `held` came from the same
    checkpoint; another dtype or device keeps nothing."""
    param, target = next(held.parameters(), None), torch.device(device)
    if param is None or param.dtype != dtype or param.device.type != target.type:
        return {}
    if target.index is not None and param.device.index != target.index:  # "cuda" is the current one
        return {}
    held_units = held.units()
    kept = {name: held_units[name] for name in model.units() if name in held_units}
    if "embed" in kept and (held.embed.table_DV is not None or model.head is not None):
        del kept["embed"]
    return kept


def share_tied_matrix(front: SegmentModel | None, tail: SegmentModel | None) -> bool:
    """With tied embeddings, let `front`'s embedding read `tail`'s head matrix and drop its own copy:
    one [D, V] matrix serves both ends when a single process holds them (vocab x hidden floats saved;
    113 MB for SmolLM2). The same segment for both (the whole model), or the edge's two pieces. Whether
    it was shared."""
    if front is None or tail is None or front.embed is None or tail.head is None:
        return False
    if not front.spec.tie_embeddings or not tail.head.lm_head.transposed:
        return False
    front.embed.share_table(tail.head.lm_head.weight)  # the embedding reads its columns
    for param in front.embed.parameters():  # GPT-2's position vectors, say
        if param.untyped_storage().nbytes() > param.nbytes:
            # a view of the unit's huge-page mapping, which would keep the dropped matrix's pages
            param.data = param.data.clone()
    return True
