"""The health probe's pace: fast at first (a quick start is seen at once), then slower."""

import time

from autoopt.tools.backends.driver import HEALTH_FAST_FOR_S, HEALTH_SLOW_S, health_pause


def test_a_service_is_probed_every_5_ms_at_first_then_every_50_ms():
    now = time.monotonic()
    assert health_pause(now) == 0.005
    assert health_pause(now - HEALTH_FAST_FOR_S - 0.1) == HEALTH_SLOW_S == 0.05
