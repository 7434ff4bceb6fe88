"""The read side, in three kinds of module that never mix:

- ``projections.folds``: the projections proper. Each is a deterministic fold of the event log
  into tables it alone owns, run exactly once per event by ``projections.engine`` and rebuilt
  by replaying the log.
- ``projections.measure`` and ``projections.queries``: the questions asked of those tables.
  They read, never write, and never read the clock; ``measure`` is the one core every question
  measures facts against targets with.
- ``projections.processes``: what acts on the read side (deviation alerts, webhook deliveries).
  They read the projections, keep their own operational tables, and are run by the service.

``engine``, ``history`` and ``sqltypes`` are the machinery the folds are built on; ``bi`` is the
SQL surface over their tables (documented views and comments) that a rebuild keeps intact.
"""
