"""The search side of MNAS: architectures, search spaces, counts, reward, controller, latency.

Everything here but `search.controller` (TensorFlow) and `search.tune` (the Ray Tune glue) is pure Python, so the
driver, the strategies and the latency predictors never build a graph.
"""
