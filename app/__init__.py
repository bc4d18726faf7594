"""Paperboy: emails each subscriber, once a day, the trending research papers that match their topics."""
