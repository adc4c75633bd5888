"""The drivers: what runs a pipeline's source, scorer and sinks. `stream` for sources
that never end (Kafka, AMQP), one micro-batch at a time; `batch` for runs that end."""
