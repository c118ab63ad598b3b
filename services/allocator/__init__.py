"""allocator service (see DESIGN.md, Components)."""
