"""The change feed: the event log, in order, for reporting services."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any, Final
from uuid import UUID

from fastapi import APIRouter, Query

from api import pagination
from api import schemas as s
from api.deps import GuardDep, ServicesDep
from api.errors import PROBLEM_RESPONSES
from api.pagination import CursorToken, Limit
from domain.application import ENTITY_NAMES

router = APIRouter(tags=["events"], responses=PROBLEM_RESPONSES)

_ENVELOPE: Final = frozenset({"originator_id", "originator_version", "timestamp", "actor", "effective_at",
                              "originator_topic"})
_ENTITIES: Final = {cls.__name__: name for cls, name in ENTITY_NAMES.items()}


def json_safe(value: Any) -> Any:
    """Event data as JSON: decimals as strings (never floats), ids and times as strings."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (Decimal, UUID)):
        return str(value)
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    return value


@router.get("/events")
def list_events(
    services: ServicesDep, guard: GuardDep,
    after: Annotated[int, Query(ge=0, le=2**62, description="Only events after this log position (a feed's "
                                                            "checkpoint: the position of the last event it handled)")
                     ] = 0,
    limit: Limit = pagination.DEFAULT_LIMIT, cursor: CursorToken = None,
) -> s.EventsOut:
    """Events in log order, each with its position, type, entity, actor, both times and its type's data."""
    guard.reporting()
    filters = {"after": after}
    start = pagination.decode(cursor, "events", filters, (pagination.parse_int,))
    first = after if start is None else max(after, start.key[0])
    planning = services.planning
    notifications = planning.recorder.select_notifications(start=first + 1, limit=limit + 1, inclusive_of_start=True)
    events = []
    for notification in notifications[:limit]:
        event: Any = planning.mapper.to_domain_event(notification)
        kind = type(event).__qualname__
        events.append(s.EVENT_MODELS[kind].model_validate({
            "position": notification.id, "type": kind,
            "entity": _ENTITIES.get(kind.split(".")[0], kind.split(".")[0].lower()),
            "entity_id": event.originator_id, "version": event.originator_version, "actor": getattr(event, "actor", ""),
            "effective_at": getattr(event, "effective_at", event.timestamp), "recorded_at": event.timestamp,
            "data": {k: json_safe(v) for k, v in vars(event).items() if k not in _ENVELOPE},
        }))
    head = planning.recorder.max_notification_id() or 0
    found = pagination.page(notifications, limit, "events", filters, lambda n: (n.id,))
    return s.EventsOut(events=events, next_cursor=found.next_cursor, head=head)
