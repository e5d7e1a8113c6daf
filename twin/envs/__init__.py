"""The papers' MDPs as batched multi-agent environments (one module per paper)."""
