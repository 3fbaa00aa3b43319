"""The benchmarks ``make bench`` runs still run, end to end, at a tiny size. Their figures are not
checked here (timings prove nothing in a test); that each phase is measured and reported is."""

from __future__ import annotations

import re

from .conftest import run


def test_the_sync_bench_reports_every_phase_against_its_baseline() -> None:
    report = run("bench/sync.py", "--rows", "300", "--edits", "20", "--repeat", "2", "--noops", "3").stdout
    for phase in ("initial sync", "incremental sync", "no-op sync"):  # time, baseline, ratio
        assert re.search(rf"^{phase} +[\d.]+ m?s +[\d.]+ m?s +\d+\.\d\dx ", report, re.MULTILINE), report
    assert "300 rows" in report and "20 edits pushed" in report
    assert "peak client RSS" in report and "warning" not in report  # the baseline stored what the sync did


def test_the_capture_bench_reports_every_statement_and_fold() -> None:
    done = run("bench/capture.py", "--rows", "300", "--single", "10", "--lookups", "10", "--repeat", "1", check=False)
    report = done.stdout
    missed_a_target = done.returncode == 1 and "OVER" in report and not done.stderr
    assert done.returncode == 0 or missed_a_target, done.stderr
    for statement in ("bulk insert", "bulk update", "autocommit update", "full scan", "point lookups", "delete all"):
        assert any(line.startswith(statement) for line in report.splitlines()), report
    assert "fold of the change log" in report


def test_the_scoped_bench_compares_a_scoped_first_sync_with_an_unscoped_one() -> None:
    report = run("bench/scoped.py", "--rows", "300", "--repeat", "1").stdout
    assert re.search(r"^scoped first sync: [\d.]+ us/row \(300 rows of 600\), unscoped [\d.]+ us/row \(600 rows\): "
                     r"\d+\.\d\dx ", report, re.MULTILINE), report


def test_the_concurrent_bench_sets_each_configuration_against_sqlite_on_one_process() -> None:
    report = run("bench/concurrency.py", "--clients", "3", "--syncs", "2", "--processes", "1", "--repeat", "1").stdout
    figures = r" +[\d.]+ +[\d.]+ ms +[\d.]+ ms +[\d.]+ ms +[\d.]+ ms +\d+\.\d\dx"  # syncs/s, p50, p99, CPU/sync x 2
    assert re.search(rf"^SQLite, 1 process{figures} \(the baseline\)$", report, re.MULTILINE), report
    for configuration in ("PostgreSQL, 1 process", "PostgreSQL, 2 processes"):  # figures, or why there are none
        assert re.search(rf"^{configuration}({figures} \(runs [\d.]+x\)| +not available: \S.*)$", report, re.MULTILINE), report
    assert "3 clients in 1 client process, 2 syncs each" in report and "warning" not in report  # no sync failed
