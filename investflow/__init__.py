"""The `investflow` command: the embedded runtime, the demo, and operators' tools."""
