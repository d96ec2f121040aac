"""lslu.timing: the round-robin loop, the ratio interval and its verdict."""
import numpy as np
import pytest

from lslu import timing


def test_round_robin_calls_in_turn_after_warmup():
    calls = []
    fns = {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}
    times = timing.round_robin(fns, repeats=3, warmup=2)
    assert calls == ["a", "b"] * 5  # 2 warm-up rounds, then 3 timed ones, in turn
    assert set(times) == {"a", "b"}
    assert all(t.shape == (3,) and (t >= 0).all() for t in times.values())


def test_round_robin_measures_the_slower_function_as_slower():
    import time
    times = timing.round_robin({"fast": lambda: None, "slow": lambda: time.sleep(0.01)},
                               repeats=5, warmup=0)
    r = timing.paired_ratio(times, "slow", "fast")
    assert r["interval"][0] > 1
    assert timing.speed_verdict(*r["interval"], "slow", "fast") == "slow slower than fast"


@pytest.mark.parametrize("kwargs", [{"fns": {}}, {"fns": {"a": 1}}, {"repeats": 0},
                                    {"repeats": 2.5}, {"warmup": -1}])
def test_round_robin_rejects_bad_settings(kwargs):
    args = {"fns": {"a": lambda: None}, "repeats": 2, "warmup": 0} | kwargs
    with pytest.raises(ValueError):
        timing.round_robin(**args)


def test_paired_ratio_gives_a_verdict_only_when_it_excludes_one():
    rng = np.random.default_rng(0)
    base = 1 + 0.3 * rng.random(40)
    noise = 1 + 0.3 * rng.random(40)
    same = timing.paired_ratio({"a": noise, "b": base}, "a", "b")
    assert same["interval"][0] < 1 < same["interval"][1]
    assert timing.speed_verdict(*same["interval"]) == "no difference measurable at this precision"
    faster = timing.paired_ratio({"a": 0.5 * base, "b": base}, "a", "b")
    assert faster["value"] == pytest.approx(0.5) and faster["interval"][1] < 1
    assert timing.speed_verdict(*faster["interval"]) == "LSLU faster than series"
    with pytest.raises(ValueError, match="same rounds"):
        timing.paired_ratio({"a": [1.0, 2.0], "b": [1.0]}, "a", "b")
    with pytest.raises(ValueError, match="confidence"):
        timing.paired_ratio({"a": [1.0], "b": [1.0]}, "a", "b", confidence=1.5)


def test_paired_ratio_over_copies_holds_their_spread():
    # copies x rounds: the copies of "a" differ by +-10% (where they lie in memory), the rounds
    # agree; the ratio is that of the means, and the interval covers the copies' spread
    rounds = np.ones(20)
    a = np.stack([1.1 * rounds, 0.9 * rounds, 1.0 * rounds])
    b = np.stack([rounds, rounds, rounds])
    r = timing.paired_ratio({"a": a, "b": b}, "a", "b")
    assert r["value"] == pytest.approx(1.0)
    assert r["interval"][0] < 0.97 and r["interval"][1] > 1.03
    one_copy = timing.paired_ratio({"a": a[:1], "b": b[:1]}, "a", "b")
    assert one_copy["interval"] == pytest.approx([1.1, 1.1])   # one copy: no spread to see


def test_summarize_reports_milliseconds_in_order():
    s = timing.summarize([0.001, 0.002, 0.003, 0.010])
    assert s["min_ms"] == pytest.approx(1.0)
    assert s["min_ms"] <= s["p10_ms"] <= s["median_ms"] <= s["p90_ms"] <= 10.0
    with pytest.raises(ValueError):
        timing.summarize([])


def test_median_interval_brackets_the_median():
    r = timing.median_interval([1.0, 1.1, 0.9, 1.05, 0.95, 1.0, 1.02])
    assert r["median"] == pytest.approx(1.0) and r["lo"] <= 1.0 <= r["hi"] < 1.1
    with pytest.raises(ValueError, match="non-empty"):
        timing.median_interval([])


def test_paired_ratio_is_the_median_of_per_round_ratios():
    # round 3 ran under load for both functions: every round's ratio is 1.1, while the ratio of
    # the medians (2.2 / 2.0 here, but any value once load shifts the middle) ignores the pairing
    times = {"lslu": np.array([1.1, 2.2, 22.0, 1.21, 2.2]),
             "series": np.array([1.0, 2.0, 20.0, 1.1, 2.0])}
    r = timing.paired_ratio(times, "lslu", "series")
    assert r["value"] == pytest.approx(1.1)
    assert r["interval"] == pytest.approx([1.1, 1.1])
    slower = timing.paired_ratio({"a": np.array([2.0, 2.2, 1.8]), "b": np.ones(3)}, "a", "b")
    assert slower["value"] == pytest.approx(2.0)
    assert slower["interval"][0] <= 2.0 <= slower["interval"][1]


def test_worst_ratio_and_judge_ratio_take_the_worst_row_for_the_target():
    rows = [{"r": 1.2, "r_interval": [1.1, 1.3]}, {"r": 0.9, "r_interval": [0.8, 1.0]}]
    assert timing.worst_ratio(rows, "r", "<=") == {"value": 1.2, "interval": [1.1, 1.3]}
    assert timing.worst_ratio(rows, "r", ">=") == {"value": 0.9, "interval": [0.8, 1.0]}
    assert timing.judge_ratio(rows, "r", "<=", 1.25)["pass"] is True
    assert timing.judge_ratio(rows, "r", "<=", 1.1) == {"value": 1.2, "interval": [1.1, 1.3],
                                                         "target": "<= 1.1", "pass": False}
    assert timing.judge_ratio(rows, "r", ">=", 1.0)["pass"] is False
    with pytest.raises(ValueError, match="op"):
        timing.worst_ratio(rows, "r", "<")
    with pytest.raises(ValueError, match="no rows"):
        timing.worst_ratio([], "r", "<=")
