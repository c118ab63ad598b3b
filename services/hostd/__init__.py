"""hostd service (see DESIGN.md, Components)."""
