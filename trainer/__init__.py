"""Architecture -> Keras model, input pipelines, the full training recipe, export."""
