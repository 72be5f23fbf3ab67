"""Names of the AMQP message headers amihub reads and writes (documented in docs/amqp.md)."""

from __future__ import annotations

#: request: the partner, when a trusted relay user publishes on its behalf
PARTNER = "amihub-partner"
#: request: the inbound mapping that turns a non-CIM body (CSV, JSON, custom XML) into readings
MAPPING = "amihub-mapping"
#: request (set by amihub when it retries): deliveries so far
ATTEMPTS = "amihub-attempts"
#: request (set by amihub when it retries): the routing key the partner used
ROUTING_KEY = "amihub-routing-key"
#: RabbitMQ quorum queues: how often the message was delivered before
DELIVERY_COUNT = "x-delivery-count"

#: reply and dead letter: OK | PARTIAL | FAILED
RESULT = "amihub-result"
#: reply: the stored reply of an earlier delivery of the same message
DUPLICATE = "amihub-duplicate"
#: reply and dead letter: row of the message log
MESSAGE_LOG_ID = "amihub-message-log-id"

#: dead letter: why (error code of docs/error-codes.md and its reason)
ERROR_CODE = "amihub-error-code"
ERROR_REASON = "amihub-error-reason"
#: dead letter: id in the dead-letter store (``amihub dead-letters show ID``)
DEAD_LETTER_ID = "amihub-dead-letter-id"
#: dead letter: where the original came in and from whom
ORIGINAL_EXCHANGE = "amihub-original-exchange"
ORIGINAL_ROUTING_KEY = "amihub-original-routing-key"
ORIGINAL_QUEUE = "amihub-original-queue"
SOURCE = "amihub-source"
#: dead letter: deliveries it had (not amihub-attempts, so a message moved back to the
#: request queue by an operator starts counting again)
FAILED_ATTEMPTS = "amihub-failed-attempts"
FAILED_AT = "amihub-failed-at"
#: dead letter: "stored" or "unavailable" (the store could not be written; the DLQ keeps it)
DEAD_LETTER_STORE = "amihub-dead-letter-store"
