"""`make bench` / `sluicegate bench run`: budget batching measured against its baselines.

One run, one machine, one seeded request mix, open-loop arrivals at several
offered loads: (a) the batches sent straight to Triton (no Kafka), (b) the
sluicegate worker with the budget batcher, (c) one request at a time, (d)
count-based batching like Triton's dynamic batcher, (e) the null model vs a
bare aiokafka relay. Figures are ratios against baselines measured in the
same run; nothing here asserts a time.
"""
