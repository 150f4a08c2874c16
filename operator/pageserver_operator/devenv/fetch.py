"""Download a release archive, verify its pinned digest, extract binaries from it; and the
heartbeat that long first steps print (a line every 10 s with an estimate).

The downloads are used by :mod:`pageserver_operator.devenv.binaries` only when the user
configured a download source (an environment variable naming the release site or a mirror):
nothing here decides to contact a host by itself. The heartbeat is also the Go build's
(:mod:`pageserver_operator.devenv.gobuild`).

Invariants:
- An archive is accepted only if its digest equals the expected one (``sha256:<hex>`` or
  ``sha512:<hex>``); otherwise it is deleted and :class:`FetchError` says so. Nothing is
  extracted from an archive before it is verified.
- A download is written to ``<dest>.partial`` and renamed to ``dest`` only once verified;
  every failure removes the partial file. Crash behaviour: a ``.partial`` left by a killed
  process is overwritten by the next download.
- :func:`extract` writes each member to the path it is given (never to a path taken from the
  archive), so a hostile member name cannot escape the cache.
"""

from __future__ import annotations

import hashlib
import sys
import tarfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path

HEARTBEAT_SECONDS = 10.0
"""At most this long between two progress lines of a long step."""

_CHUNK = 1 << 20


class FetchError(RuntimeError):
    """A download or an extraction failed; the message says which URL or member and why."""


def _log(message: str) -> None:
    print(f"[devenv.fetch] {message}", file=sys.stderr, flush=True)


def format_duration(seconds: float) -> str:
    """``42 s`` or ``6 min 5 s``: how a person reads a duration."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    return f"{seconds // 60} min {seconds % 60} s"


def parse_digest(digest: str) -> tuple[str, str]:
    """``sha512:<hex>`` -> (``sha512``, ``<hex>``); only sha256 and sha512 are accepted."""
    algorithm, _, value = digest.partition(":")
    lengths = {"sha256": 64, "sha512": 128}
    if algorithm not in lengths or len(value) != lengths[algorithm]:
        raise ValueError(f"not a sha256:/sha512: digest: {digest!r}")
    int(value, 16)  # hex, or ValueError
    return algorithm, value.lower()


def download(
    url: str, dest: Path, digest: str, label: str, timeout: float = 30.0, clock: Callable[[], float] = time.monotonic
) -> int:
    """Download ``url`` to ``dest`` if its digest is ``digest``; return its size in bytes.

    Prints a progress line at least every :data:`HEARTBEAT_SECONDS` (bytes, rate, time left when
    the server sent a length). Raises :class:`FetchError` on any failure, leaving nothing behind.
    """
    algorithm, expected = parse_digest(digest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".partial")
    hasher = hashlib.new(algorithm)
    size = 0
    started = last_report = clock()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, partial.open("wb") as out:
            total = int(response.headers.get("Content-Length") or 0)
            _log(f"{label}: downloading {url}" + (f" ({total / (1 << 20):.0f} MiB)" if total else ""))
            while chunk := response.read(_CHUNK):
                out.write(chunk)
                hasher.update(chunk)
                size += len(chunk)
                now = clock()
                if now - last_report >= HEARTBEAT_SECONDS:
                    last_report = now
                    rate = size / max(now - started, 1e-6)
                    left = f", about {format_duration((total - size) / rate)} left" if total and rate else ""
                    done = f"{size >> 20}/{total >> 20} MiB" if total else f"{size >> 20} MiB"
                    _log(f"{label}: {done} in {format_duration(now - started)} ({rate / (1 << 20):.1f} MiB/s{left})")
    except (OSError, urllib.error.URLError, ValueError) as error:
        partial.unlink(missing_ok=True)
        raise FetchError(f"download of {url} failed: {error}") from error
    actual = hasher.hexdigest()
    if actual != expected:
        partial.unlink(missing_ok=True)
        raise FetchError(
            f"refused {url}: its {algorithm} is {actual}, the pinned one is {expected} "
            "(a different or corrupted file; nothing was cached)"
        )
    partial.replace(dest)
    return size


def extract(archive: Path, members: Mapping[str, Path]) -> None:
    """Write each archive member ``name`` to ``members[name]`` (mode 0755).

    A member that is missing or not a regular file raises :class:`FetchError`.
    """
    try:
        with tarfile.open(archive, "r:*") as tar:
            for name, target in members.items():
                try:
                    info = tar.getmember(name)
                except KeyError as error:
                    raise FetchError(f"{archive.name} has no member {name}") from error
                source = tar.extractfile(info) if info.isfile() else None
                if source is None:
                    raise FetchError(f"{archive.name}: {name} is not a regular file")
                target.parent.mkdir(parents=True, exist_ok=True)
                with source, target.open("wb") as out:
                    while chunk := source.read(_CHUNK):
                        out.write(chunk)
                target.chmod(0o755)
    except (OSError, tarfile.TarError) as error:
        raise FetchError(f"cannot extract from {archive}: {error}") from error


class Heartbeat:
    """Says every :data:`HEARTBEAT_SECONDS` what a long step is doing and an estimate of what is left.

    ``estimate`` is the step's expected total duration in seconds (e.g. the last run's); a
    ``progress`` callable may return ``(done, total)`` units (packages compiled), which gives a
    better estimate once some are done.
    """

    def __init__(
        self,
        label: str,
        estimate: float | None,
        progress: Callable[[], tuple[int, int] | None] | None = None,
        log: Callable[[str], None] = _log,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.label = label
        self.estimate = estimate
        self.progress = progress
        self._log = log
        self._clock = clock
        self.started = clock()

    def line(self) -> str:
        """The progress line for now."""
        elapsed = self._clock() - self.started
        parts = [f"{self.label}: running for {format_duration(elapsed)}"]
        left: float | None = None
        counted = self.progress() if self.progress else None
        if counted is not None:
            done, total = counted
            parts.append(f"{done}/{total} done")
            if total and done >= max(1, total // 20):
                left = elapsed / done * max(total - done, 0)
        if left is None and self.estimate is not None:
            left = self.estimate - elapsed
            if left <= 0:
                parts.append(f"longer than the {format_duration(self.estimate)} expected")
                left = None
        if left is not None:
            parts.append(f"about {format_duration(left)} left")
        return ", ".join(parts)

    def beat(self) -> None:
        self._log(self.line())
