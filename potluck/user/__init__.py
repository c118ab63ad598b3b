"""The user's side of the `potluck` command: login, allocations, ssh."""
