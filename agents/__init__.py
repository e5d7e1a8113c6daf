"""Learning and decision: networks, buffers, algorithms, baselines, training, actor bundles."""
