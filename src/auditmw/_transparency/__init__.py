"""Transparency: what lets someone outside the store check its logs (docs/checkpoints.md,
which opens with the vocabulary used here).

- ``merkle``: a log's Merkle tree (RFC 9162), its frontier, inclusion and consistency proofs;
- ``notes``: signed notes, signing and verifier keys, checkpoints (C2SP, Ed25519);
- ``key_record``: the log entry naming the key that signs a log's checkpoints;
- ``checkpoints``: issuing checkpoints as a store's logs grow;
- ``sinks``: publishing them beside the store;
- ``proofs``: the inclusion proof of one entry, anchored in a checkpoint when one covers it;
- ``inputs``, ``external``, ``checkpoint_report``: checking a log against checkpoints from
  anywhere, and what that found.
"""
