"""Recognizer: finds every face in an image and names the enrolled people.

``core`` and ``gallery`` are pure (no Kafka, HTTP or database); ``worker`` is the thin
Kafka adapter around them; ``__main__`` runs N worker processes.
"""
