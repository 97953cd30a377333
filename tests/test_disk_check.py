"""The run stops before its first test, saying why, when the temporary folder's disk is too full."""
import pytest

from _disk import MIN_FREE_DISK_GB, free_disk_gb, require_free_disk


def test_too_little_free_disk_stops_the_run_with_the_numbers(tmp_path):
    with pytest.raises(pytest.UsageError) as raised:
        require_free_disk(tmp_path, needed_gb=free_disk_gb(tmp_path) + 1000)
    message = str(raised.value)
    assert f"GB free at {tmp_path}" in message
    assert "--basetemp" in message


def test_enough_free_disk_passes(tmp_path):
    require_free_disk(tmp_path, needed_gb=0)
    assert MIN_FREE_DISK_GB >= 2  # the measured peak of a run is 1.9 GB
