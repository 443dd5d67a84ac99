"""GPU benchmark of the LLM runner: served throughput vs in-process batches vs the bandwidth roofline.

Run with `python -m bench.gpu` (see README.md next to this file).
"""
