"""The AMQP adapter: partner systems exchange IEC 61968-9 messages with amihub over RabbitMQ.

::

    partner --publish verb.Noun--> [amihub.requests] exchange --#--> amihub.requests queue
        -> AmqpConsumer: batch of up to ``batch_size`` deliveries (prefetch)
           -> identity (user_id / amihub-partner) -> routing key and mapping header checks
           -> Pipeline.process (or process_batch): committed before anything is acked
           -> replies to reply_to + dead letters to amihub.dead-letter, one batch of confirms
           -> ack
    outbox channel "amqp" -> OutboxDispatcher -> ConfirmingPublisher -> amihub.events / queues

Modules, one job each: :mod:`.connection` (URL, credentials, TLS, backoff),
:mod:`.topology` (what is declared), :mod:`.headers` (the header names partners
see), :mod:`.identity` (who sent it), :mod:`.mapping` (the ``amihub-mapping``
header), :mod:`.publisher` (batched publisher confirms, per transport),
:mod:`.consumer`, :mod:`.service` (``amihub serve``), :mod:`.workers`
(``--workers N``). The same code runs on RabbitMQ (``amqp://``, ``amqps://``)
and on kombu's in-process ``memory://`` transport. See docs/amqp.md.
"""
