"""A latest-wins slot: one thread publishes values, another polls for the newest one.

Workers (training, posing, exporting) publish what the UI should show next; the UI polls once per
frame and never waits. Values published between two polls are skipped, as a viewer's should be.
"""
from __future__ import annotations

import threading
from typing import Generic, TypeVar

T = TypeVar("T")


class Latest(Generic[T]):
    """A lock-protected ``(version, value)`` slot; version 0 means nothing was published yet."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._value: T | None = None
        self._version = 0

    def publish(self, value: T) -> int:
        """Make ``value`` the latest; returns its version (1, 2, ...). Thread-safe, never blocks for long."""
        with self._lock:
            self._version += 1
            self._value = value
            return self._version

    def poll(self, seen_version: int) -> tuple[int, T] | None:
        """``(version, value)`` if something newer than ``seen_version`` was published, else None."""
        with self._lock:
            if self._version == seen_version:
                return None
            return self._version, self._value

    def get(self) -> T | None:
        """The latest value (None before the first publish)."""
        with self._lock:
            return self._value

    @property
    def version(self) -> int:
        with self._lock:
            return self._version
