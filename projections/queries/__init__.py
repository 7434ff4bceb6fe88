"""The questions: read-only functions over the projections' tables, each answered at a cut on both clocks."""
