"""The event contract between facestream's services.

Every message on a facestream topic is an :class:`~schemas.envelope.Envelope` whose
``data`` is one of the payloads in :mod:`schemas.events`. The JSON Schema files under
``schemas/json/`` are generated from these models (``python -m schemas.generate``) and a
test keeps them in step; ``schemas/examples/`` holds one published example per event
type and version, and every one of them must still parse.
"""
