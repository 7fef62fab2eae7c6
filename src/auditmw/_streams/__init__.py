"""Log streams: every event of a store delivered to another system, at least once, in
order (issue 20; docs/streams.md).

``forwarder`` runs the loop; ``cursor`` keeps a stream's durable position and lease in the
store; ``destination`` is the interface every receiver implements (and the URL-scheme
registry); ``formats`` turns events into records; ``files`` and ``nats`` are
destinations; ``follow`` waits for new commits; ``status`` tells how far behind a stream
is.
"""
