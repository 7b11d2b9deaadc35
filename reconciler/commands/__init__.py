"""One module per command group; each function takes plain values and returns an exit code."""
