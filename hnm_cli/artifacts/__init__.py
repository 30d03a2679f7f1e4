"""On-disk contracts between stages: one module per layout, the only one that reads and writes it."""
