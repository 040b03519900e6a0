from sluicegate.workers.output.offsets import OffsetTracker


def test_commit_advances_only_to_the_lowest_unfinished_offset() -> None:
    tracker: OffsetTracker[str] = OffsetTracker()
    for offset in range(5):
        tracker.track("p0", offset)
    tracker.done("p0", 3)
    tracker.done("p0", 0)
    assert tracker.committable() == {"p0": 1}
    tracker.mark_committed({"p0": 1})
    assert tracker.committable() == {}
    for offset in (1, 2, 4):
        tracker.done("p0", offset)
    assert tracker.committable() == {"p0": 5}
    assert tracker.in_flight() == 0


def test_partitions_are_independent_and_forgettable() -> None:
    tracker: OffsetTracker[str] = OffsetTracker()
    tracker.track("p0", 10)
    tracker.track("p1", 7)
    tracker.done("p1", 7)
    assert tracker.committable() == {"p0": 10, "p1": 8}
    tracker.forget(["p0"])
    tracker.done("p0", 10)  # a late ack for a revoked partition is ignored
    assert tracker.committable() == {"p1": 8}
