"""Benchmarks of sagan_tf: training throughput, FLOPs, the input pipeline and evaluation."""
