"""The bottom layer: the error type, atomic files and run locks, signals and one-line failures,
what a command may read and write, the safe YAML reader. It imports nothing of msakit above it."""
