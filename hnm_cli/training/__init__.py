"""Fine-tuning a reranker: training examples from mined rows or exported files, and the ranking losses."""
