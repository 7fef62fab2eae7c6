"""Signed checkpoints: Merkle trees, signed notes and keys, issuing, sinks, proofs."""
