"""STICKY_PROXY_GAVE_UP_FILE: give-up records appended as JSON lines, each on
disk as soon as it is written; a record the file cannot take goes to the log."""

from __future__ import annotations

import contextlib
import json
import logging
from typing import IO, Any

logger = logging.getLogger("scrapy_sticky_proxy.state.memory")


class GaveUpFile:
    def __init__(self, path: str) -> None:
        self.path = path
        self.errors = 0  # records it could not take (each logged at ERROR)
        self._file: IO[str] | None = None

    def append(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, ensure_ascii=False)
        if not line.isascii():
            try:
                line.encode("utf-8")
            except UnicodeEncodeError:  # a lone surrogate, from a key
                line = json.dumps(record)
        try:
            if self._file is None:
                # Line-buffered append: a record is on disk as soon as it is
                # written, even if the process is killed afterwards.
                self._file = open(  # noqa: SIM115
                    self.path, "a", encoding="utf-8", buffering=1
                )
            self._file.write(line + "\n")
        except OSError as exc:
            # Disk full, file or directory removed: the record goes to the
            # log instead, and the next one tries a fresh handle.
            self.errors += 1
            broken, self._file = self._file, None
            if broken is not None:
                with contextlib.suppress(OSError):
                    broken.close()
            logger.error(
                "Could not append a give-up record to STICKY_PROXY_GAVE_UP_FILE "
                "%s (%s); the record: %s",
                self.path,
                exc.strerror or type(exc).__name__,
                json.dumps(record),
            )

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
