"""Export buffers: memory for finished turns on their way to disk, reused and mapped ahead, within one bound."""

from palaver.engine.native.export_buffers import GRANULE, ExportBuffers


def test_a_written_turns_buffer_is_lent_again_for_a_somewhat_longer_turn():
    buffers = ExportBuffers(64 * GRANULE)
    first = buffers.take(GRANULE)
    assert first is not None and len(first) >= 1.25 * GRANULE
    buffers.give_back(first)
    again = buffers.take(int(1.25 * GRANULE))
    assert again is first and buffers.mapped == 1


def test_the_writer_maps_a_spare_ahead_for_the_largest_turn_asked_for():
    buffers = ExportBuffers(64 * GRANULE)
    lent = buffers.take(3 * GRANULE)
    buffers.prepare()
    assert buffers.mapped == 2
    ahead = buffers.take(3 * GRANULE)
    assert ahead is not None and ahead is not lent and buffers.mapped == 2, "the engine maps nothing"
    buffers.prepare()
    assert buffers.mapped == 3
    buffers.give_back(lent)
    buffers.give_back(ahead)
    buffers.prepare()
    assert buffers.mapped == 3, "a spare fits: nothing more is mapped"


def test_lent_and_spare_buffers_stay_within_the_bound():
    buffers = ExportBuffers(4 * GRANULE)
    first = buffers.take(2 * GRANULE)
    assert first is not None and len(first) == 3 * GRANULE
    assert buffers.take(2 * GRANULE) is None, "3 lent: no room for 2 more"
    small = buffers.take(GRANULE // 2)
    assert small is not None and len(small) == GRANULE
    buffers.give_back(first)
    buffers.give_back(small)
    assert buffers.held_bytes() == 4 * GRANULE
    bigger = buffers.take(int(3.5 * GRANULE))
    assert bigger is not None and len(bigger) == int(3.5 * GRANULE), "spares dropped, no headroom, but room"
    assert buffers.held_bytes() <= 4 * GRANULE
    buffers.prepare()
    assert buffers.held_bytes() <= 4 * GRANULE


def test_dropped_spares_give_their_memory_back():
    buffers = ExportBuffers(64 * GRANULE)
    lent = buffers.take(GRANULE)
    spare = buffers.take(GRANULE)
    assert lent is not None and spare is not None
    buffers.give_back(spare)
    buffers.drop_spares()
    assert buffers.held_bytes() == len(lent)
    buffers.prepare()
    assert buffers.held_bytes() == len(lent), "nothing is wanted after a drop"
