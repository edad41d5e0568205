"""The search side of MNAS: architectures, search spaces, counts, reward, controller, latency.

`search.space`, `search.counts`, `search.registry` and `search.reward` are pure Python: they import no
TensorFlow and no Ray, so the controller loop and the latency predictors never build a graph.
"""
