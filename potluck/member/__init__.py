"""The member's side of the `potluck` command: joining a pool with one token."""
