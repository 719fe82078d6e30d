"""Prompts in, rows out: everything between a user's text and the engine's token batches, and back to files.

records.py    prompts from Python objects or files (.jsonl, .csv, .txt), checked, with where each came from
tokenize.py   chat templates and raw text to token ids; the pad id
templates.py  the paper's prompt templates (App. E.2) for a user's own pair
batching.py   token-budget micro-batches, length-sorted and left-padded
output.py     results to .jsonl / .csv / .parquet, written atomically
"""
