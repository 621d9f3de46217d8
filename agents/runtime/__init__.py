"""The batched Kafka runtime the agents run on, below them and above Faust.

Readers that take input partitions by hand and hand over whole batches
(:mod:`.reader`), per-partition progress markers (:mod:`.progress`), read-back of an
output partition's tail (:mod:`.tail`), batched produce (:mod:`.outbox`), direct table
I/O (:mod:`.table_io`), Kafka's partitioning of keys (:mod:`.keys`) and the due-time
index of entity deadlines (:mod:`.deadlines`).
"""
