"""``make bench-scale`` (bench/scale.py) still runs, end to end, at a tiny size. Its figures are not
checked here (timings prove nothing in a test); that each phase and size is measured and reported is,
and that both sides held every row afterwards (the bench exits non-zero otherwise)."""

from __future__ import annotations

import re

from .conftest import run


def test_the_scale_bench_reports_every_phase_and_size() -> None:
    report = run("bench/scale.py", "--sizes", "200,400").stdout
    for phase in ("pull", "push"):
        for size in (200, 400):
            # rows, time, us/row, rows/s, curve, client RSS, server RSS (where /proc has it), CPU of both, rounds
            line = rf"^{phase} +{size} +[\d.]+s +[\d.]+ +[\d,]+ +[\d.]+x +\d+ MB +(\d+ MB|-) +[\d.]+ s +([\d.]+ s|-) +\d+$"
            assert re.search(line, report, re.MULTILINE), report
    assert "curve: time per row over the smallest size's" in report
    assert "MISSED" not in report, report
