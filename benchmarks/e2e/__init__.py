"""The end-to-end refresh benchmark of ``benchmarks/bench_e2e.py``, in small parts.

Every path refreshes the same N sandbox grants once, with the same endpoint latency and the
same number of requests in flight, so their refreshes per second compare within one run.
"""
