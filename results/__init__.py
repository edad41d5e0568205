"""Results of a search run: the store of evaluated children, the Pareto frontier, the `results` command's data.

    results.store   ResultStore: SQLite (WAL) store in RUN_DIR/results.sqlite, one writer, many readers; export
    results.pareto  pareto_front, is_pareto_efficient, hypervolume (accuracy vs latency)

Submodules are imported explicitly, so `results.pareto` stays usable without pandas. Nothing here imports
TensorFlow or Ray.
"""
