"""One module per state of the pruning machine (see controller/machine.py).

A handler takes the run context and returns the trigger to fire next; raising
ends the run in Failed with nothing further removed.
"""
