"""scripts/bench, in modules: one per section family, plus the harness they share."""
