import pytest

from partition.types import Segment, n_units, unit_kind, unit_name


def test_unit_names_cover_embed_blocks_head():
    names = [unit_name(i, 3) for i in range(n_units(3))]
    assert names == ["embed", "block.0", "block.1", "block.2", "head"]
    assert [unit_kind(i, 3) for i in range(5)] == ["embed", "block", "block", "block", "head"]
    with pytest.raises(IndexError):
        unit_name(5, 3)


@pytest.mark.parametrize(
    ("segment", "blocks", "embed", "head"),
    [
        (Segment(0, 5), range(0, 3), True, True),
        (Segment(0, 1), range(0, 0), True, False),
        (Segment(1, 3), range(0, 2), False, False),
        (Segment(3, 5), range(2, 3), False, True),
        (Segment(4, 5), range(3, 3), False, True),
    ],
)
def test_segment_blocks_embed_head(segment, blocks, embed, head):
    assert segment.blocks(3) == blocks
    assert segment.has_embed is embed
    assert segment.has_head(3) is head


def test_segment_is_half_open_and_validated():
    seg = Segment(2, 4)
    assert len(seg) == 2 and 2 in seg and 4 not in seg
    assert Segment.parse("2:4") == seg == Segment.parse("[2,4)")
    with pytest.raises(ValueError):
        Segment(3, 3)
    with pytest.raises(ValueError):
        Segment(0, 6).check_within(3)
    with pytest.raises(ValueError, match="start:end"):
        Segment.parse("a-b")
