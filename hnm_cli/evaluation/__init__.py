"""Evaluation of rerankers: first-stage candidates, reranking, ranking metrics, significance, comparison and reports."""
