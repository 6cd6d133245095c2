"""Weights moved into one huge-page mapping per unit keep their values, ties and outputs."""

import pytest
import torch
from torch import nn

from partition.model import huge_pages
from partition.model.huge_pages import HUGE_PAGE_BYTES, move_to_huge_pages

pytestmark = pytest.mark.skipif(not huge_pages.supported(), reason="no MADV_HUGEPAGE on this platform")


class Tied(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.up = nn.Linear(256, 2048)  # 2 MiB of weights: enough for one huge page
        self.down = nn.Linear(2048, 256, bias=False)
        self.norm = nn.LayerNorm(256)
        self.again = self.up  # the same module twice: its parameters must be moved once

    def forward(self, x):
        return self.norm(self.down(torch.relu(self.up(x))))


def _vma_flags(address: int) -> set[str]:
    """VmFlags of the mapping in /proc/self/smaps that contains `address`."""
    inside = False
    with open("/proc/self/smaps") as smaps:
        lines = smaps.read().splitlines()
    for line in lines:
        head = line.split()[0]
        if "-" in head and not head.endswith(":"):
            lo, hi = (int(v, 16) for v in head.split("-"))
            inside = lo <= address < hi
        elif inside and head == "VmFlags:":
            return set(line.split()[1:])
    raise AssertionError(f"no mapping holds {address:#x}")


def test_parameters_move_into_one_advised_mapping_unchanged():
    model = Tied().eval()
    x = torch.randn(3, 256)
    before = model(x)
    values = {name: p.detach().clone() for name, p in model.named_parameters()}

    moved = move_to_huge_pages(model)

    assert moved >= sum(p.nbytes for p in model.parameters()) >= HUGE_PAGE_BYTES
    for name, p in model.named_parameters():
        assert isinstance(p, nn.Parameter) and torch.equal(p, values[name]), name
    storages = {p.untyped_storage().data_ptr() for p in model.parameters()}
    assert len(storages) == 1  # one arena for the whole unit
    assert model.again.weight is model.up.weight
    assert min(p.data_ptr() for p in model.parameters()) % HUGE_PAGE_BYTES == 0
    assert all(p.data_ptr() % 64 == 0 for p in model.parameters())
    assert "hg" in _vma_flags(model.up.weight.data_ptr())  # advised MADV_HUGEPAGE
    assert torch.equal(model(x), before)


def test_a_unit_smaller_than_a_huge_page_stays_where_it_is():
    small = nn.Linear(64, 64)
    pointer = small.weight.data_ptr()
    assert move_to_huge_pages(small) == 0
    assert small.weight.data_ptr() == pointer


def test_a_tied_matrix_dropped_from_a_units_mapping_frees_it(tmp_path):
    """GPT-2's embedding unit keeps its token and position vectors in one mapping. A segment holding the
    head reads the token vectors from the head's matrix and drops its own: the position vectors left
    must not keep the whole mapping alive, or the memory the planner counted as saved stays used."""
    from partition.model import load_segment, resolve_model
    from partition.types import Segment
    from tests.model.checkpoints import save_tiny_hf

    source = resolve_model(str(save_tiny_hf("gpt2", tmp_path / "gpt2", vocab=8192)))  # 2 MiB of tokens
    model = load_segment(source, Segment.whole(source.spec.n_blocks))
    positions = model.embed.positions.weight
    assert model.embed.tokens is None and model.embed.table_DV is model.head.lm_head.weight
    assert positions.untyped_storage().nbytes() == positions.nbytes
