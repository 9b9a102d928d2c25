"""The life of a placed job: its state machine, and the latency-budget monitor apart."""
