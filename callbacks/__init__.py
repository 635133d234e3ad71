"""Lightning callbacks of agentr, installed as `agentr.callbacks`."""
