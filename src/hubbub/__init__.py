"""hubbub: self-hosted live multi-speaker transcription."""

__version__ = "0.1.0"
