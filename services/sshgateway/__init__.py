"""sshgateway service (see DESIGN.md, Components)."""
