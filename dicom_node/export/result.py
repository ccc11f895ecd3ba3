"""What one export attempt did, per file (shared by every exporter)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SendResult:
    """``ok``: paths the destination acknowledged; ``failed``: (path, reason).
    ``permanent``: the failed paths a retry cannot fix (the destination refused the data
    itself, e.g. a STOW FailureReason or a DIMSE 0xA9xx status)."""

    ok: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    permanent: list[str] = field(default_factory=list)

    @property
    def all_ok(self) -> bool:
        return not self.failed

    def fail(self, path: str, reason: str, permanent: bool = False) -> None:
        self.failed.append((path, reason))
        if permanent:
            self.permanent.append(path)
