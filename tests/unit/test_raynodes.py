"""cluster/stop.sh's helper forgets Ray's note of the cluster it stopped, and only that one."""

from __future__ import annotations

from pathlib import Path

from rayapp.tools.raynodes import forget_address


def test_the_stopped_clusters_address_file_is_removed(tmp_path: Path) -> None:
    note = tmp_path / "ray_current_cluster"
    note.write_text("192.0.2.2:6390")
    assert forget_address(6390, str(tmp_path)) is True
    assert not note.exists()  # a later ray.init() without an address starts its own instance
    assert forget_address(6390, str(tmp_path)) is False  # nothing left to remove


def test_another_clusters_address_file_is_kept(tmp_path: Path) -> None:
    note = tmp_path / "ray_current_cluster"
    note.write_text("192.0.2.2:16390")  # same digits at the end, another port
    assert forget_address(6390, str(tmp_path)) is False
    note.write_text("10.0.0.5:6379")
    assert forget_address(6390, str(tmp_path)) is False
    assert note.read_text() == "10.0.0.5:6379"
