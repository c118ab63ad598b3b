"""Read models that more than one service folds from the log: hosts and allocations.

Each is a pure fold (events in, state out) with no I/O, fed by potluck.events'
Fold, so every service and `potluck ops replay` build the same state from the
same events.
"""
