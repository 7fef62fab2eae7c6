"""The log entry that records which key signs a log's checkpoints from then on
(docs/checkpoints.md, "Key rotation"): written by the issuer, checked by ``auditmw verify``."""

KEY_ROTATED_ACTION = "checkpoint.key_rotated"
KEY_RESOURCE = "checkpoint_key"
