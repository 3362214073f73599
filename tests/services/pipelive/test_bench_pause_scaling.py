"""The pause-scaling benchmark measures what it says: live copies only the final dirty tail in its pause,
stop-and-copy all the moving layers' KV in use, at every size."""

from __future__ import annotations

from services.pipelive.bench import pause_scaling as bench_pause_scaling
from tests.services.pipelive.reconf_support import MODEL8


def test_live_pauses_for_the_dirty_tail_and_stop_and_copy_for_all_moving_kv() -> None:
    figures = bench_pause_scaling.run(sizes=(16, 64), requests=4, model=MODEL8, progress=False)
    block_layer_bytes = MODEL8.kv_bytes_per_token_per_layer() * 16
    moving_layers = 2
    assert [row["kv_blocks"] for row in figures["sizes"]] == [16, 64]
    for row in figures["sizes"]:
        live, stop = row["methods"]["live"], row["methods"]["stop_and_copy"]
        assert live["kv_blocks_in_use"] >= row["kv_blocks"] - 4  # the prompts fill about what was asked
        assert stop["pause_kv_bytes"] == stop["moving_kv_bytes"] == stop["kv_bytes_copied"]
        assert live["pause_kv_bytes"] == live["final_dirty_blocks"] * moving_layers * block_layer_bytes
        # Everything live copies before its pause is at least all moving KV once.
        assert live["kv_bytes_copied"] >= live["moving_kv_bytes"]
        assert live["patch_rounds"] >= 1 and stop["patch_rounds"] == 0
    small, large = figures["sizes"]
    # Four times the KV: stop-and-copy's pause copies four times as much, live's tail stays per request.
    assert (
        large["methods"]["stop_and_copy"]["pause_kv_bytes"]
        >= 3 * small["methods"]["stop_and_copy"]["pause_kv_bytes"]
    )
    assert large["methods"]["live"]["final_dirty_blocks"] <= 2 * 4  # at most two steps' writes of 4 requests
