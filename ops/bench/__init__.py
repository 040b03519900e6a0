"""`make bench` / `sluicegate bench run`: budget batching measured against its baselines.

One run, one machine, one seeded request mix, open-loop arrivals at several
offered loads: (a) the batches sent straight to Triton (no Kafka), (b) the
sluicegate worker with the budget batcher, (c) one request at a time, (d)
count-based batching in the same worker (full run), (e) the null model vs a
bare aiokafka relay, (f) two pools vs the CPU pool alone, (g) a hand-rolled
consumer on Triton's real dynamic batcher (``triton-dynamic``). Modes run in
interleaved rounds; each figure is the median over rounds with its spread
(``figures.py``). Figures are ratios against baselines measured in the same
run; nothing here asserts a time.
"""
