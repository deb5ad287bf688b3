"""Running things: a run request, the runner and its queue (capacity), jobs on threads,
Compare, Batch, model pulls, window checks and backend probes."""
