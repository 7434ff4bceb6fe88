"""The projections: each module folds the event log into tables it alone owns (rebuildable by replay)."""
