"""Paperboy: emails each subscriber, once a day, the trending research papers on their topics."""
