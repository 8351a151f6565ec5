"""The web app: the UI, one relay per browser stream to the transcriber, and its client."""
