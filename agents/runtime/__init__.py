"""The batched Kafka runtime the agents run on, below them and above Faust.

Readers that take input partitions by hand and hand over whole batches of
:class:`~.records.Record` (:mod:`.reader`), per-partition progress markers
(:mod:`.progress`), read-back of an output partition's tail (:mod:`.tail`), batched
produce (:mod:`.outbox`), direct table I/O (:mod:`.table_io`), the one owner of the
commit order (:mod:`.checkpoint`), Kafka's partitioning of keys (:mod:`.keys`), the
due-time index of entity deadlines (:mod:`.deadlines`) and the frozen configuration the
app builds (:mod:`.config`). Nothing here imports the agents, the domain tables or the
app.
"""
