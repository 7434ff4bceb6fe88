"""The domain's exceptions.

    DomainError                 a command broke a rule; nothing was written
    ├── ValidationError         the input itself is malformed (400/422 over HTTP)
    ├── RuleViolation           the input is well formed but a business rule refuses it (409/422)
    ├── NotFound                the entity does not exist (or is not visible to the caller)
    └── VersionConflict         another writer changed the entity first (412/409)

Every error names its ``rule`` (a stable, dotted identifier such as ``money.negative``),
the offending ``field`` when there is one, and a human-readable message.
"""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """A command was refused; nothing was written."""

    def __init__(self, rule: str, message: str, field: str | None = None, **details: Any) -> None:
        super().__init__(message)
        self.rule = rule
        self.message = message
        self.field = field
        self.details = details

    def __repr__(self) -> str:
        return f"{type(self).__name__}(rule={self.rule!r}, field={self.field!r}, message={self.message!r})"


class ValidationError(DomainError):
    """The input is malformed: wrong type, out of range, badly formatted."""


class RuleViolation(DomainError):
    """A well-formed command that a business rule refuses."""


class NotFound(DomainError):
    """The entity does not exist."""

    def __init__(self, entity: str, entity_id: object, field: str | None = None) -> None:
        super().__init__(
            f"{entity}.not_found", f"{entity} {entity_id} does not exist", field, entity_id=str(entity_id)
        )


class VersionConflict(DomainError):
    """Another writer changed the entity first: reload and retry."""

    def __init__(self, entity_id: object, expected: int | None, current: int) -> None:
        super().__init__(
            "concurrency.version_conflict",
            f"{entity_id} is at version {current}, not {expected}: it changed since it was read",
            None,
            entity_id=str(entity_id),
            expected_version=expected,
            current_version=current,
        )
        self.current_version = current
