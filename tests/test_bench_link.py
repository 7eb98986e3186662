"""bench/link.py's choice of the link rate (no processes started: the selection logic only)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_link", ROOT / "bench" / "link.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def trial(bench, goodput: float, got: int = 10, rx_cpu: float = 1.0, tx_cpu: float = 0.5):
    nbytes = int(goodput * 1e6)  # one second of goodput
    return bench.Trial(got, nbytes, 1.0, (rx_cpu, 100, 0.7, 0.01), (tx_cpu, 100, 0.4))


def test_the_best_delivering_trial_counts_not_the_first(bench):
    # an overdriven first trial delivers everything (the receive buffer held the backlog) at a low
    # goodput; a lower pace does better: the bench used to report the first
    trials = [(1.3, trial(bench, 40.0)), (1.15, trial(bench, 60.0))]
    best, go_on = bench.best_goodput(trials, 10, cipher=100.0)
    assert best == 60.0
    assert go_on  # 60 < 100 x 1.0: the next pace may still beat it


def test_a_trial_that_lost_objects_never_counts(bench):
    trials = [(1.3, trial(bench, 90.0, got=9)), (1.15, trial(bench, 70.0))]
    assert bench.best_goodput(trials, 10, cipher=100.0)[0] == 70.0
    assert bench.best_goodput(trials[:1], 10, cipher=100.0)[0] == 0.0


def test_the_ladder_stops_when_no_lower_pace_can_beat_the_best(bench):
    trials = [(1.3, trial(bench, 50.0)), (1.15, trial(bench, 70.0)), (1.0, trial(bench, 85.0)),
              (0.9, trial(bench, 88.0))]
    assert bench.best_goodput(trials[:3], 10, cipher=100.0) == (85.0, True)    # 0.9 x 100 > 85
    assert bench.best_goodput(trials, 10, cipher=100.0) == (88.0, False)       # 0.8 x 100 < 88
    last = [(bench.FACTORS[-1], trial(bench, 10.0))]
    assert bench.best_goodput(last, 10, cipher=100.0) == (10.0, False)         # nothing lower to try


def test_cpu_figures_per_block_and_the_slower_side(bench):
    t = trial(bench, 50.0, rx_cpu=1.0, tx_cpu=0.5)
    assert (t.rx_us, t.tx_us) == pytest.approx((10000.0, 5000.0))
    assert (t.rx_cipher_us, t.tx_cipher_us, t.rx_socket_us) == pytest.approx((7000.0, 4000.0, 100.0))
    assert t.cpu_rate == pytest.approx(50.0)   # 50 MB over the receiver's 1.0 CPU second
