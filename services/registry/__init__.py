"""registry service (see DESIGN.md, Components)."""
