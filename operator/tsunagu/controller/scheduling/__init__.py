"""Scheduling: the queue of pending jobs, the assume cache, the decision loop, the gang binder."""
